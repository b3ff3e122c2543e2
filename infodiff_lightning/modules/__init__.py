"""LightningModules: analysis jobs and fine-tuning.

What they need from datamodules (and the monitor from them) is declared in
``infodiff_lightning.protocols``.
"""
from .caption_analysis import CaptionAnalysis
from .caption_ranking import CaptionRanking
from .word_localization import WordLocalization
from .finetune import DiffusionFineTuner
from .generation import Generation
from .selection import CandidateSelection
from .ground_truth import GroundTruthAnalysis
from .pid_study import PIDStudy
from .prompt_intervention import PromptIntervention
from .vector_information import VectorInformation
from .vector_training import VectorMITrainer

__all__ = ["PIDStudy", "PromptIntervention", "VectorInformation", "VectorMITrainer", "CaptionAnalysis", "CaptionRanking",
           "WordLocalization", "DiffusionFineTuner", "GroundTruthAnalysis", "Generation", "CandidateSelection"]
