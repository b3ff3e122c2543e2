"""LightningModules: analysis jobs and fine-tuning."""
from .caption_analysis import CaptionAnalysis
from .finetune import DiffusionFineTuner
from .ground_truth import GroundTruthAnalysis
from .protocols import CaptionedEvaluationData, MeasurableModule, ProbeData

__all__ = ["CaptionAnalysis", "DiffusionFineTuner", "GroundTruthAnalysis", "MeasurableModule", "ProbeData",
           "CaptionedEvaluationData"]
