"""Datasets and datamodules."""
from .caption_folder import CaptionFolder, CaptionFolderData
from .shapes import CaptionedShapes, CaptionedShapesData

__all__ = ["CaptionedShapes", "CaptionedShapesData", "CaptionFolder", "CaptionFolderData"]
