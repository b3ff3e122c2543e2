"""The repository's callbacks/ folder: a re-export of :mod:`infodiff_lightning.callbacks`.

The callbacks are installed with the library as ``infodiff_lightning.callbacks``; the
distribution claims no top-level ``callbacks`` module (any other project's
``callbacks`` would collide with it), so this folder is not installed. It keeps
``from callbacks import InformationMonitor`` working in scripts run from a checkout.
"""
from infodiff_lightning.callbacks import InformationMonitor

__all__ = ["InformationMonitor"]
