"""torchmetrics for information estimates: per-sample states reduced in id order (the same
bits on any number of processes), and fixed-size sums for maps."""
from .information import InformationMap, PointwiseInformation
from .pid import PartialInformation

__all__ = ["PointwiseInformation", "InformationMap", "PartialInformation"]
