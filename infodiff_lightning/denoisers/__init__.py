"""Denoisers: one adapter per model family behind the protocol in base.py."""
from .base import Column, Denoiser
from .gaussian import CorrelatedGaussian, JointGaussian
from .mixture import DiscreteMixture, GaussianMixture

__all__ = ["Column", "Denoiser", "JointGaussian", "CorrelatedGaussian", "DiscreteMixture", "GaussianMixture"]
