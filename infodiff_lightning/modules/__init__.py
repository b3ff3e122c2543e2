"""LightningModules: analysis jobs and fine-tuning."""
from .caption_analysis import CaptionAnalysis
from .caption_ranking import CaptionRanking
from .word_localization import WordLocalization
from .finetune import DiffusionFineTuner
from .ground_truth import GroundTruthAnalysis
from .pid_study import PIDStudy
from .prompt_intervention import PromptIntervention
from .vector_information import VectorInformation
from .vector_training import VectorMITrainer
from .protocols import CaptionedEvaluationData, MeasurableModule, ProbeData, GroupedEvaluationData, LocalizationEvaluationData

__all__ = ["PIDStudy", "PromptIntervention", "VectorInformation", "VectorMITrainer", "CaptionAnalysis", "CaptionRanking", "WordLocalization", "LocalizationEvaluationData", "GroupedEvaluationData", "DiffusionFineTuner", "GroundTruthAnalysis", "MeasurableModule", "ProbeData",
           "CaptionedEvaluationData"]
