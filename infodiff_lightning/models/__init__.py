"""Model builders (tiny offline models for tests, demos and from-scratch training)."""
from .tiny import TinyTextToImageSpec, build_clip_tokenizer, build_tiny_text_to_image, save_components

__all__ = ["TinyTextToImageSpec", "build_clip_tokenizer", "build_tiny_text_to_image", "save_components"]
