"""One loader for diffusers text-to-image folders: the family is read from the folder.

| family  | adapter                    | recognised by                                                     |
|---------|----------------------------|-------------------------------------------------------------------|
| `sd`    | LatentDiffusionDenoiser    | a vae/ and a UNet without added conditions (SD 1.x / 2.x)         |
| `pixel` | PixelTextDenoiser          | no vae/ (pixel-space text UNet)                                   |
| `sdxl`  | SDXLDenoiser               | a UNet with addition_embed_type "text_time", or StableDiffusionXLPipeline |
| `sd3`   | SD3Denoiser                | transformer/ holding an SD3Transformer2DModel, or StableDiffusion3Pipeline |
| `flux`  | FluxDenoiser               | transformer/ holding a FluxTransformer2DModel, or FluxPipeline    |

A local folder's model_index.json names its pipeline; without one the subfolders and
their configs decide. A hub id is read from its model_index.json (diffusers fetches that
one small file; nothing else is downloaded before the weights).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

__all__ = ["FAMILIES", "model_family", "load_text_to_image"]

#: family -> (module under denoisers/, adapter class)
FAMILIES: dict[str, tuple[str, str]] = {
    "sd": ("diffusers_latent", "LatentDiffusionDenoiser"),
    "pixel": ("diffusers_pixel", "PixelTextDenoiser"),
    "sdxl": ("sdxl", "SDXLDenoiser"),
    "sd3": ("sd3", "SD3Denoiser"),
    "flux": ("flux", "FluxDenoiser"),
}
_PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl", "StableDiffusion3Pipeline": "sd3",
              "FluxPipeline": "flux"}
_TRANSFORMERS = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"could not read {path}: {e}") from e


def _folder_family(folder: Path) -> str:
    index = folder / "model_index.json"
    if index.is_file():
        family = _PIPELINES.get(str(_read_json(index).get("_class_name")))
        if family is not None:
            return family
    if (folder / "transformer").is_dir():
        config = folder / "transformer" / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{folder}/transformer/ has no config.json: not a saved diffusers transformer")
        name = str(_read_json(config).get("_class_name"))
        if name not in _TRANSFORMERS:
            raise ValueError(f"{folder}/transformer/ holds a {name}; the adapters support "
                             f"{', '.join(sorted(_TRANSFORMERS))}")
        return _TRANSFORMERS[name]
    unet_config = folder / "unet" / "config.json"
    if unet_config.is_file() and _read_json(unet_config).get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd" if (folder / "vae").is_dir() else "pixel"


def model_family(pretrained: str | Path, revision: str | None = None) -> str:
    """The family (a key of :data:`FAMILIES`) of a diffusers folder or hub id (module doc)."""
    local = Path(pretrained).expanduser()
    if local.is_dir():
        return _folder_family(local)
    if not local.exists() and str(pretrained).startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {pretrained} does not exist")
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(str(pretrained), revision=revision)
    except OSError:
        return "sd"  # the adapter's own loading then says what is missing
    return _PIPELINES.get(str(index.get("_class_name")), "sd")


def load_text_to_image(pretrained: str | Path, lora: str | Path | None = None, family: str | None = None, **kw):
    """The adapter of a diffusers folder or hub id, its family read from the folder
    (:func:`model_family`) unless ``family`` names it. ``lora``: a backbone LoRA adapter
    folder loaded on top; ``kw`` go to ``from_pretrained`` (revision, variant, torch_dtype,
    device, ...)."""
    if family is None:
        family = model_family(pretrained, kw.get("revision"))
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    module, cls = FAMILIES[family]
    adapter = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    return adapter.from_pretrained(pretrained, lora=lora, **kw)
