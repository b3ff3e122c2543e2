"""Lightning callbacks of infodiff-lightning: in a YAML, ``class_path:
infodiff_lightning.callbacks.InformationMonitor``."""
from .information_monitor import InformationMonitor

__all__ = ["InformationMonitor"]
