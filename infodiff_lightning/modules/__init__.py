"""LightningModules: analysis jobs and fine-tuning."""
from .finetune import DiffusionFineTuner
from .ground_truth import GroundTruthAnalysis

__all__ = ["DiffusionFineTuner", "GroundTruthAnalysis"]
