"""Datasets and datamodules."""
from .caption_folder import CaptionFolder, CaptionFolderData
from .digits import CaptionedDigits, CaptionedDigitsData
from .generated import GeneratedCandidatesData
from .prompts import PromptData
from .localization_files import LocalizationData, LocalizationRows
from .ranking_files import CaptionRankingData, RankingFiles
from .shapes import CaptionedShapes, CaptionedShapesData
from .world import CaptionedWorld, CaptionedWorldData
from .vector_pairs import VectorPairData, read_vector_pairs

__all__ = ["VectorPairData", "read_vector_pairs", "CaptionedShapes", "CaptionedShapesData", "CaptionFolder", "CaptionFolderData", "CaptionedWorld",
           "CaptionedWorldData", "CaptionedDigits", "CaptionedDigitsData", "CaptionRankingData", "RankingFiles", "LocalizationData", "LocalizationRows", "PromptData", "GeneratedCandidatesData"]
