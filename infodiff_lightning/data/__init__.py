"""Datasets and datamodules."""
from .caption_folder import CaptionFolder, CaptionFolderData
from .digits import CaptionedDigits, CaptionedDigitsData
from .localization_files import LocalizationData, LocalizationRows
from .ranking_files import CaptionRankingData, RankingFiles
from .shapes import CaptionedShapes, CaptionedShapesData
from .world import CaptionedWorld, CaptionedWorldData

__all__ = ["CaptionedShapes", "CaptionedShapesData", "CaptionFolder", "CaptionFolderData", "CaptionedWorld",
           "CaptionedWorldData", "CaptionedDigits", "CaptionedDigitsData", "CaptionRankingData", "RankingFiles", "LocalizationData", "LocalizationRows"]
