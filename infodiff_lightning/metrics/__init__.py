"""torchmetrics for information estimates (fixed-size sum states, DDP-exact)."""
from .information import ConditionalMutualInformation, InformationMap, MutualInformation, PointwiseInformation
from .pid import PartialInformation, PartialInformationMap

__all__ = ["PointwiseInformation", "MutualInformation", "ConditionalMutualInformation", "InformationMap",
           "PartialInformation", "PartialInformationMap"]
