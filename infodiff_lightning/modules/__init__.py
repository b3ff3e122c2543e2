"""LightningModules: analysis jobs and fine-tuning."""
from .caption_analysis import CaptionAnalysis
from .caption_ranking import CaptionRanking
from .finetune import DiffusionFineTuner
from .ground_truth import GroundTruthAnalysis
from .protocols import CaptionedEvaluationData, MeasurableModule, ProbeData, RankingData

__all__ = ["CaptionAnalysis", "CaptionRanking", "RankingData", "DiffusionFineTuner", "GroundTruthAnalysis", "MeasurableModule", "ProbeData",
           "CaptionedEvaluationData"]
