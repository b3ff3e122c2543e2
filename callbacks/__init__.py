"""Lightning callbacks of infodiff-lightning."""
from .information_monitor import InformationMonitor

__all__ = ["InformationMonitor"]
