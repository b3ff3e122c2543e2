"""Denoisers: one adapter per model family behind the protocol in base.py."""
from .base import AttentionDenoiser, Column, Denoiser, DenoiserBase, TextDenoiser
from .gaussian import CorrelatedGaussian, JointGaussian
from .mixture import DiscreteMixture, GaussianMixture

__all__ = ["AttentionDenoiser", "TextDenoiser", "Column", "Denoiser", "DenoiserBase", "JointGaussian", "CorrelatedGaussian", "DiscreteMixture", "GaussianMixture"]

# diffusers adapters (diffusers/transformers are imported lazily, when a model is loaded)
from .diffusers_latent import LatentDiffusionDenoiser
from .diffusers_pixel import ClassConditionalDenoiser, PixelTextDenoiser
from .flux import FluxDenoiser
from .sd3 import SD3Denoiser
from .sdxl import SDXLDenoiser
from .prediction import eps_from_prediction
from .loading import load_text_to_image
from .text_encoding import PromptEncoder

__all__ += ["LatentDiffusionDenoiser", "PixelTextDenoiser", "ClassConditionalDenoiser", "SDXLDenoiser", "SD3Denoiser",
            "FluxDenoiser", "PromptEncoder",
            "eps_from_prediction", "load_text_to_image"]
