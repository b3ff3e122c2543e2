"""Figures: heat-map overlays of information maps and MMSE / MMSE-gap curves."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to TensorBoard or files, never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

__all__ = ["overlay", "mmse_figure", "clip_for_display"]


def clip_for_display(heat: torch.Tensor, low: float = 0.0) -> torch.Tensor:
    """A display-only view: negative values (possible for standard maps and synergy) clipped."""
    return heat.clamp_min(low)


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.6, cmap: str = "inferno") -> torch.Tensor:
    """Blend a heat map (h, w) over an image (3, H, W) in [-1, 1]; returns (3, H, W) in [0, 1].

    The map is upsampled to the image size (latent maps are 8x smaller) and scaled to
    its own maximum, so overlays show where information sits, not how much.
    """
    if image.ndim != 3 or heat.ndim != 2:
        raise ValueError(f"overlay needs image (3, H, W) and heat (h, w), got {tuple(image.shape)}, {tuple(heat.shape)}")
    img = ((image.detach().float().cpu() + 1) / 2).clamp(0, 1)
    h = F.interpolate(heat.detach().float().cpu()[None, None], size=img.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    h = clip_for_display(h)
    h = h / h.max().clamp_min(1e-12)
    colour = torch.from_numpy(matplotlib.colormaps[cmap](h.numpy())[..., :3]).permute(2, 0, 1).float()
    return (1 - alpha) * img + alpha * colour


def mmse_figure(alphas: torch.Tensor, mmse: torch.Tensor, labels: list[str], title: str = ""):
    """MMSE curves per condition (left) and the gap to the first one (right), over log-SNR."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    a = alphas.detach().cpu().numpy()
    for k, lab in enumerate(labels):
        ax1.plot(a, mmse[k].detach().cpu().numpy(), label=lab)
    for k, lab in enumerate(labels[1:], start=1):
        ax2.plot(a, (mmse[0] - mmse[k]).detach().cpu().numpy(), label=f"{labels[0]} - {lab}")
    ax1.set(xlabel="log-SNR alpha", ylabel="mmse", title=title or "MMSE")
    ax2.set(xlabel="log-SNR alpha", ylabel="mmse gap (2 x integrand)", title="gap")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig
