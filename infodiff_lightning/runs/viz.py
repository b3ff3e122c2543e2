"""Figures: heat-map overlays of information maps and MMSE / MMSE-gap curves."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to TensorBoard or files, never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ..estimators import Estimate  # noqa: E402

__all__ = ["overlay", "mmse_figure", "clip_for_display", "map_figure", "pid_figure", "localization_figure",
           "ranking_figure", "DISPLAY_SIZE"]

#: Pixel size at which a heat map figure shows each panel (model maps are often 16x16 or
#: 64x64: shown as they are, they are a smudge).
DISPLAY_SIZE = 256


def clip_for_display(maps: torch.Tensor | Estimate, quantile: float | None = None) -> torch.Tensor:
    """A copy of maps (N, *map_shape) (or an Estimate's map) for pictures only: negative
    values set to 0 and, with ``quantile``, values above that quantile of each map set to it.

    Standard-estimator maps and the synergy map can be negative per pixel (and per image):
    sums, means and tests must use the unclipped maps.
    """
    m = maps.map if isinstance(maps, Estimate) else maps
    if m is None:
        raise ValueError("clip_for_display: the estimate carries no map (call the estimator with maps=True)")
    out = m.detach().clamp_min(0)
    if quantile is not None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        flat = out.reshape(out.shape[0], -1)
        hi = torch.quantile(flat.to(torch.float64), quantile, dim=1).to(out.dtype)
        out = torch.minimum(flat, hi[:, None]).reshape(out.shape)
    return out


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.6, cmap: str = "inferno") -> torch.Tensor:
    """Blend a heat map (h, w) over an image (3, H, W) in [-1, 1]; returns (3, H, W) in [0, 1].

    The map is upsampled to the image size (latent maps are 8x smaller) and scaled to
    its own maximum, so overlays show where information sits, not how much.
    """
    if image.ndim != 3 or heat.ndim != 2:
        raise ValueError(f"overlay needs image (3, H, W) and heat (h, w), got {tuple(image.shape)}, {tuple(heat.shape)}")
    img = ((image.detach().float().cpu() + 1) / 2).clamp(0, 1)
    h = F.interpolate(heat.detach().float().cpu()[None, None], size=img.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    h = clip_for_display(h[None])[0]
    h = h / h.max().clamp_min(1e-12)
    colour = torch.from_numpy(matplotlib.colormaps[cmap](h.numpy())[..., :3]).permute(2, 0, 1).float()
    return (1 - alpha) * img + alpha * colour


def map_figure(image: torch.Tensor, heat: torch.Tensor, title: str, size: int = DISPLAY_SIZE):
    """A figure for people: image | heat map with its colour scale | overlay.

    ``image`` (3, H, W) in [-1, 1]; ``heat`` (h, w) an information map in nats per
    element (latent maps are smaller than the image). Each panel is ``size`` pixels wide
    (the image upsampled with nearest neighbours, the map bilinearly); the colour bar is
    in nats per element and the title should carry the value (e.g. "cmi/red = 0.53 +- 0.04
    nats"). Negative map values are clipped at 0 for display only.
    """
    if image.ndim != 3 or heat.ndim != 2:
        raise ValueError(f"map_figure needs image (3, H, W) and heat (h, w), got {tuple(image.shape)}, "
                         f"{tuple(heat.shape)}")
    big = F.interpolate(image.detach().float().cpu()[None], size=(size, size), mode="nearest")[0]
    img = ((big + 1) / 2).clamp(0, 1)
    h = F.interpolate(heat.detach().float().cpu()[None, None], size=(size, size), mode="bilinear",
                      align_corners=False)[0, 0]
    shown = clip_for_display(h[None])[0]
    dpi = 100
    fig, axes = plt.subplots(1, 3, figsize=(3 * size / dpi + 1.2, size / dpi + 0.6), dpi=dpi)
    axes[0].imshow(img.permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=8)
    im = axes[1].imshow(shown.numpy(), cmap="inferno", vmin=0)
    axes[1].set_title("map", fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04).set_label("nats per element", fontsize=7)
    axes[2].imshow(overlay(big, heat, alpha=0.6).permute(1, 2, 0).numpy())
    axes[2].set_title("overlay", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def pid_figure(image: torch.Tensor, maps: torch.Tensor, values: list[float], title: str, size: int = DISPLAY_SIZE // 2):
    """A figure of the four PID maps of one image: image | redundancy | unique1 | unique2 | synergy.

    ``maps`` (4, h, w) in nats per element, ``values`` the four image-level terms (shown in
    the panel titles). The maps share one colour scale (negative values clipped at 0 for
    display), so the panels compare: where the two words say the same thing, where only
    one says it, and where only both together do.
    """
    if image.ndim != 3 or maps.ndim != 3 or maps.shape[0] != 4 or len(values) != 4:
        raise ValueError(f"pid_figure needs image (3, H, W), maps (4, h, w) and 4 values, got {tuple(image.shape)}, "
                         f"{tuple(maps.shape)}, {len(values)} values")
    big = F.interpolate(image.detach().float().cpu()[None], size=(size, size), mode="nearest")[0]
    heat = F.interpolate(maps.detach().float().cpu()[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    shown = clip_for_display(heat)
    top = float(shown.max().clamp_min(1e-12))
    dpi = 100
    fig, axes = plt.subplots(1, 5, figsize=(5 * size / dpi + 1.2, size / dpi + 0.7), dpi=dpi)
    axes[0].imshow(((big + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=8)
    for ax, name, m, v in zip(axes[1:], ("redundancy", "unique1", "unique2", "synergy"), shown, values):
        im = ax.imshow(m.numpy(), cmap="inferno", vmin=0, vmax=top)
        ax.set_title(f"{name} {v:.3f}", fontsize=8)
    fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.04).set_label("nats per element", fontsize=7)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def localization_figure(image: torch.Tensor, mask: torch.Tensor, maps: dict[str, torch.Tensor], title: str,
                        size: int = DISPLAY_SIZE // 2):
    """A figure of one localization row: image | the word's true mask | each method's map.

    ``mask`` (H, W) bool at the image's size; ``maps`` name -> (h, w) map (CMI in nats per
    element, attention in its own units), each drawn on its own scale with the mask's
    outline over it, so that where a map puts the word can be read against the truth.
    """
    if image.ndim != 3 or mask.ndim != 2 or not maps:
        raise ValueError(f"localization_figure needs image (3, H, W), mask (H, W) and at least one map, got "
                         f"{tuple(image.shape)}, {tuple(mask.shape)}, {len(maps)} maps")
    big = F.interpolate(image.detach().float().cpu()[None], size=(size, size), mode="nearest")[0]
    outline = F.interpolate(mask.detach().float().cpu()[None, None], size=(size, size), mode="nearest")[0, 0]
    dpi = 100
    fig, axes = plt.subplots(1, 2 + len(maps), figsize=((2 + len(maps)) * size / dpi + 0.4, size / dpi + 0.7), dpi=dpi)
    axes[0].imshow(((big + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=8)
    axes[1].imshow(outline.numpy(), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("mask", fontsize=8)
    for ax, (name, m) in zip(axes[2:], maps.items()):
        heat = F.interpolate(m.detach().float().cpu()[None, None], size=(size, size), mode="bilinear",
                             align_corners=False)[0, 0]
        ax.imshow(clip_for_display(heat[None])[0].numpy(), cmap="inferno", vmin=0)
        ax.contour(outline.numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name, fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ranking_figure(image: torch.Tensor, candidates: list[str], scores: list[float], stderrs: list[float], title: str,
                   size: int = DISPLAY_SIZE // 2):
    """A figure of one ranking item: the image, and each candidate caption's pointwise MI
    (nats) with a bar of +- one standard error; the true caption (the first) in green."""
    if image.ndim != 3 or not (len(candidates) == len(scores) == len(stderrs)) or not candidates:
        raise ValueError(f"ranking_figure needs image (3, H, W) and one score and stderr per candidate, got "
                         f"{tuple(image.shape)}, {len(candidates)} candidates, {len(scores)} scores")
    big = F.interpolate(image.detach().float().cpu()[None], size=(size, size), mode="nearest")[0]
    dpi = 100
    fig, (left, right) = plt.subplots(1, 2, figsize=(size / dpi + 4.5, max(size / dpi, 0.35 * len(candidates)) + 0.7),
                                      dpi=dpi, gridspec_kw={"width_ratios": [1, 2.5]})
    left.imshow(((big + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy())
    left.set_axis_off()
    rows = list(range(len(candidates)))[::-1]  # the true caption on top
    colours = ["tab:green"] + ["tab:gray"] * (len(candidates) - 1)
    right.barh(rows, scores, xerr=stderrs, color=colours, capsize=2)
    right.set_yticks(rows, [c if len(c) <= 40 else c[:37] + "..." for c in candidates], fontsize=7)
    right.set_xlabel("pointwise MI (nats)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def mmse_figure(alphas: torch.Tensor, mmse: torch.Tensor, labels: list[str], title: str = ""):
    """MMSE curves per condition (left) and the gap to the first one (right), over log-SNR.

    mmse is E||eps - eps_hat||^2 summed over the elements of x (so its scale is the
    dimension of x); half the gap is the integrand of the information in nats."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a = alphas.detach().cpu().numpy()
    for k, lab in enumerate(labels):
        ax1.plot(a, mmse[k].detach().cpu().numpy(), label=lab)
    for k, lab in enumerate(labels[1:], start=1):
        ax2.plot(a, (mmse[0] - mmse[k]).detach().cpu().numpy(), label=f"{labels[0]} - {lab}")
    ax1.set(xlabel="log-SNR alpha = log(abar / (1 - abar))", ylabel="MMSE of eps (sum over elements)",
            title=title or "MMSE")
    ax2.set(xlabel="log-SNR alpha = log(abar / (1 - abar))", ylabel="MMSE gap (2 x nats per unit alpha)",
            title="gap to the first condition")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig
