"""torchmetrics for information estimates (fixed-size sum states, DDP-exact)."""
from .information import ConditionalMutualInformation, InformationMap, MutualInformation, PointwiseInformation

__all__ = ["PointwiseInformation", "MutualInformation", "ConditionalMutualInformation", "InformationMap"]

from .pid import PartialInformation, PartialInformationMap  # noqa: E402

__all__ += ["PartialInformation", "PartialInformationMap"]
