"""LightningModules: analysis jobs and fine-tuning."""
from .ground_truth import GroundTruthAnalysis

__all__ = ["GroundTruthAnalysis"]
