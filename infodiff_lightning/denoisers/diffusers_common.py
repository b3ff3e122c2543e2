"""What every diffusers adapter shares: the parametrisation (log-SNR -> the backbone's
input and timestep, its output -> eps_hat), autocast, device handling, folder checks and
component loading.

The parametrisation comes from the scheduler (parametrisation.py): a DDPM-type table
abar_t, where x_alpha of eq. (1) is the model's x_t and alpha maps to a continuous
timestep, or flow matching, where the input is rescaled and the velocity converted
(flow.py).

Adapters run under ``torch.inference_mode``. On CUDA they autocast to float16 by
default (``autocast_dtype="auto"``); float16 keeps ~3 decimal digits per element, which
adds a small positive bias to orthogonal gaps between *different* conditions (bf16 adds
~60x more: prefer float16 or None for information estimates). Nothing inside ``eps_hat``
synchronises with the host except encoding a prompt not yet in the cache. On CPU the
log-SNR range is checked inside ``eps_hat``; on accelerators it is not (that would be a
host sync): the estimators check their draws against ``alpha_range`` beforehand.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..integrate import Piecewise
from ..logsnr import interpolate_timesteps
from ..proposal import PROPOSAL_FILE, load_proposal
from .base import Column, DenoiserBase, column_len
from .cross_attention import recorded_cross_attention, summed_attention
from .parametrisation import DDPMParametrisation, FlowParametrisation, parametrisation_of
from .text_encoding import PromptEncoder

__all__ = ["DiffusersDenoiser", "TextUNetDenoiser", "UNetCrossAttention", "interpolate_timesteps", "resolve_pretrained",
           "load_component", "load_scheduler", "open_pretrained", "AUTOCAST_DTYPES", "check_transformer_class",
           "require_flow"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
AUTOCAST_DTYPES = {"auto": "auto", None: None, "none": None, "float16": torch.float16, "fp16": torch.float16,
                   "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": None, "fp32": None}


# ----------------------------------------------------------------------------- schedule

def _resolve_autocast(value) -> Any:
    key = value if not isinstance(value, str) else value.lower()
    if isinstance(value, torch.dtype):
        if value not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"autocast_dtype must be float16, bfloat16, None or 'auto', got {value}")
        return None if value == torch.float32 else value
    if key not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be one of {sorted(k for k in AUTOCAST_DTYPES if k)} or None, "
                         f"got {value!r}")
    return AUTOCAST_DTYPES[key]


class DiffusersDenoiser(DenoiserBase):
    """Base of the diffusers adapters: one backbone network (a UNet or a transformer) and
    its parametrisation (parametrisation.py: a DDPM-type table or flow matching).

    Subclasses call the backbone in :meth:`model_output`. ``scheduler`` is a diffusers
    scheduler (DDPM-type: its ``alphas_cumprod`` and ``config.prediction_type``; FlowMatch*:
    flow matching), a 1-D tensor of abar_t (``prediction_type`` then defaults to
    "epsilon") or a parametrisation.
    """

    #: backbone inputs per call when an estimator or job is not told (every job's default):
    #: the fastest on CPU for the bundled models (batches of 256 are 1.5x slower there,
    #: benchmarks/bench_memory_format.py) and safe for SD-sized UNets on a GPU, where small
    #: models want more (microbatch: 512 or more).
    default_microbatch = 64
    #: the backbone's modules a LoRA fine-tune adapts by default (peft target_modules)
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, backbone: torch.nn.Module, scheduler: Any, *, prediction_type: str | None = None,
                 device: torch.device | str | None = None, autocast_dtype: Any = "auto",
                 timestep_scale: float | None = None):
        self.backbone = backbone
        self.scheduler = None if isinstance(scheduler, (Tensor, DDPMParametrisation, FlowParametrisation)) else scheduler
        self.parametrisation = parametrisation_of(scheduler, prediction_type, timestep_scale=timestep_scale)
        self.alpha_range: tuple[float, float] | None = self.parametrisation.alpha_range
        self.alpha_proposal: Piecewise | None = None  # set by from_pretrained from the model folder
        self.autocast_dtype = _resolve_autocast(autocast_dtype)
        if device is not None:
            self.backbone.to(device)

    @property
    def prediction_type(self) -> str:
        """What the backbone outputs: "epsilon", "v_prediction", "sample" or "flow_velocity"."""
        return self.parametrisation.prediction_type

    @property
    def alphas_cumprod(self) -> Tensor:
        """The DDPM table abar_t (DDPM-type models only)."""
        if not isinstance(self.parametrisation, DDPMParametrisation):
            raise AttributeError("a flow-matching model has no alphas_cumprod table")
        return self.parametrisation.alphas_cumprod

    # -- device, dtype, timesteps
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def to(self, device: torch.device | str) -> "DiffusersDenoiser":
        """Move every module to ``device`` (and drop caches kept on the old one)."""
        for m in self.modules():
            m.to(device)
        self.clear_cache()
        return self

    def clear_cache(self) -> None:
        """Forget cached encodings (call after updating the weights they came from)."""

    def modules(self) -> list[torch.nn.Module]:
        """Every network of the model (backbone first, then text encoders, VAE)."""
        return [self.backbone]

    def text_encoders(self) -> list[torch.nn.Module]:
        """The text encoders, in the family's order (empty for class-conditional models)."""
        return []

    def components(self) -> dict:
        """The diffusers pipeline components by folder name, as ``save_pretrained`` writes them."""
        raise NotImplementedError

    def load_lora(self, path: str | Path, adapter_name: str | None = None, prefix: str | None = None,
                  weight_name: str | None = None) -> "DiffusersDenoiser":
        """Load a LoRA adapter into the backbone (peft), as saved by ``save_lora_adapter``
        (e.g. the fine-tuning module's ``unet_lora/``). ``prefix``: key prefix to select in a
        pipeline-level LoRA file (e.g. "unet"); None for a backbone-only adapter."""
        p = Path(path).expanduser()
        if not p.exists() and not _HUB_ID.match(str(path)):
            raise FileNotFoundError(f"LoRA adapter folder {path} does not exist")
        if not hasattr(self.backbone, "load_lora_adapter"):
            raise ValueError(f"{type(self.backbone).__name__} cannot load LoRA adapters (no load_lora_adapter)")
        kw: dict = {"prefix": prefix, "use_safetensors": True}  # diffusers only reads .bin without this
        if adapter_name is not None:
            kw["adapter_name"] = adapter_name
        if weight_name is not None:
            kw["weight_name"] = weight_name
        self.backbone.load_lora_adapter(str(p) if p.exists() else str(path), **kw)
        self.clear_cache()
        return self

    def timesteps(self, alpha: Tensor) -> Tensor:
        """The backbone's float32 timesteps t(alpha) on the model's device (parametrisation.py)."""
        t = self.parametrisation.timesteps(torch.as_tensor(alpha))
        return t.to(device=self.device, dtype=torch.float32, non_blocking=True)

    def _autocast(self):
        dt = self.autocast_dtype
        dev = self.device
        if dt == "auto":
            dt = torch.float16 if dev.type == "cuda" else None
        if dt is None or dev.type not in ("cuda", "cpu", "xpu", "mps"):
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=dt)

    # -- the protocol
    def model_output(self, x_in: Tensor, t: Tensor, conditions: Column, *, train: bool = False) -> Tensor:
        """The backbone's raw output at its own input ``x_in`` and timesteps ``t``.
        ``train``: conditions are encoded uncached and with gradients (fine-tuning), instead
        of from the cache under inference mode (the estimators)."""
        raise NotImplementedError

    def null_conditions(self, n: int) -> Column:
        raise NotImplementedError

    @torch.inference_mode()
    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        """eps_hat(x_alpha, alpha | c) for B inputs, B log-SNRs and a column of B conditions."""
        b = int(x_alpha.shape[0])
        if column_len(conditions) != b:
            raise ValueError(f"eps_hat got {b} inputs but {column_len(conditions)} conditions")
        alpha = torch.as_tensor(alpha)
        if alpha.shape != (b,):
            raise ValueError(f"alpha must have shape ({b},), got {tuple(alpha.shape)}")
        t = self.timesteps(alpha)
        dev = self.device
        alpha_dev = alpha.to(dev, non_blocking=True)
        x_in = self.parametrisation.scale_input(x_alpha.to(dev, non_blocking=True), alpha_dev)
        with self._autocast():
            out = self.model_output(x_in.to(self.dtype), t, conditions)
        if out.shape[1] == 2 * x_in.shape[1] and out.shape[2:] == x_in.shape[2:]:
            out = out[:, : x_in.shape[1]]  # learned-variance models: the first half is the mean prediction
        eps = self.parametrisation.eps_from_output(out, x_in, alpha_dev)
        return eps.to(device=x_alpha.device, dtype=x_alpha.dtype)


class UNetCrossAttention:
    """The attention baseline of UNet families (AttentionDenoiser): ``cross_attention``
    records the UNet's cross-attention during one ``model_output`` call."""

    unet: torch.nn.Module

    @torch.inference_mode()
    def cross_attention(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        """(B, L, H, W): per token position of the first tokenizer, the UNet's
        cross-attention from each element of x (heads averaged, every layer resized to x's
        H x W and summed; cross_attention.py)."""
        b = int(x_alpha.shape[0])
        if column_len(conditions) != b or torch.as_tensor(alpha).shape != (b,):
            raise ValueError(f"cross_attention needs {b} log-SNRs and {b} conditions for {b} inputs")
        with recorded_cross_attention(self.unet) as recorder, self._autocast():
            self.model_output(x_alpha.to(self.device, self.dtype), self.timesteps(torch.as_tensor(alpha)), conditions)
        return summed_attention(recorder, tuple(x_alpha.shape[-2:])).to(x_alpha.device)


class TextUNetDenoiser(UNetCrossAttention, DiffusersDenoiser):
    """A UNet2DConditionModel conditioned on text embeddings (pixel or latent space).

    Conditions: a list of prompt strings or :class:`~infodiff_lightning.conditions.Condition`;
    the null condition is the empty prompt. Text embeddings are cached per unique
    condition (:attr:`text`, a :class:`PromptEncoder`).
    """

    def __init__(self, unet, text_encoder, tokenizer, scheduler, *, prediction_type: str | None = None,
                 device=None, autocast_dtype: Any = "auto", cache_text: bool = True, text_batch_size: int = 32):
        super().__init__(unet, scheduler, prediction_type=prediction_type, device=device, autocast_dtype=autocast_dtype)
        self.unet = unet
        cfg = unet.config
        if getattr(cfg, "addition_embed_type", None) is not None:
            raise ValueError(f"this UNet needs added conditions (addition_embed_type={cfg.addition_embed_type!r}); "
                             "SDXL UNets (addition_embed_type='text_time') load with SDXLDenoiser (denoisers/sdxl.py); "
                             "TextUNetDenoiser supports SD 1.x/2.x-style UNets")
        if getattr(cfg, "class_embed_type", None) is not None or getattr(cfg, "num_class_embeds", None) is not None:
            raise ValueError("this UNet also takes class labels (class_embed_type/num_class_embeds set), "
                             "which the text adapters do not supply")
        if getattr(cfg, "time_cond_proj_dim", None) is not None:
            raise ValueError("this UNet takes a guidance embedding (time_cond_proj_dim set, e.g. LCM); not supported")
        hidden = getattr(getattr(text_encoder, "config", None), "hidden_size", None)
        dims = getattr(cfg, "cross_attention_dim", None)
        dims = set(dims) if isinstance(dims, (list, tuple)) else {dims}
        if getattr(cfg, "encoder_hid_dim", None) is None and hidden is not None and dims != {hidden}:
            raise ValueError(f"text encoder hidden size {hidden} does not match the UNet's cross_attention_dim "
                             f"{cfg.cross_attention_dim}")
        if device is not None:
            text_encoder.to(device)
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text = PromptEncoder(tokenizer, text_encoder, batch_size=text_batch_size, cache=cache_text)

    def modules(self):
        return [self.unet, self.text_encoder]

    def text_encoders(self):
        return [self.text_encoder]

    def components(self) -> dict:
        return {"unet": self.unet, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer,
                "scheduler": self.scheduler}

    def null_conditions(self, n: int) -> list[str]:
        return [""] * n

    def text_embeddings(self, conditions: Sequence) -> Tensor:
        """(B, L, D) embeddings on the UNet's device (cached per unique condition)."""
        return self.text(conditions).to(self.device, non_blocking=True)

    def clear_cache(self) -> None:
        super().clear_cache()
        self.text.clear_cache()

    def model_output(self, x_in, t, conditions, *, train: bool = False):
        emb = self.text.embed(list(conditions)) if train else self.text_embeddings(conditions)
        return self.unet(x_in, t, encoder_hidden_states=emb.to(self.device, self.dtype), return_dict=False)[0]



# ----------------------------------------------------------------------------- loading

def resolve_pretrained(path_or_hub_id: str | Path, required: Sequence[str], family: str) -> tuple[str, bool]:
    """(path string, is_local). A local folder must exist and hold every ``required``
    subfolder with a config; anything that is not an existing folder and does not look
    like a hub id "org/name" is treated as a missing local folder."""
    s = str(path_or_hub_id)
    p = Path(s).expanduser()
    local = p.exists() or not _HUB_ID.match(s) or s.startswith((".", "~"))
    if not local:
        return s, False
    if not p.is_dir():
        raise FileNotFoundError(f"model folder {s} does not exist (expected a diffusers {family} folder with "
                                f"subfolders {', '.join(required)})")
    present = sorted(q.name for q in p.iterdir() if q.is_dir())
    for sub in required:
        if not (p / sub).is_dir():
            raise FileNotFoundError(f"{s} has no {sub}/ subfolder (found: {present or 'none'}); a diffusers {family} "
                                    f"folder needs {', '.join(f'{r}/' for r in required)}")
    if "unet" in required and not (p / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{s}/unet/ has no config.json: not a saved diffusers UNet")
    return str(p), True


def _component_class(path: str, local: bool, name: str, default: str):
    """The class named for ``name`` in model_index.json (local folders), else ``default``
    ("library.Class")."""
    lib, cls = default.split(".")
    index = Path(path) / "model_index.json"
    if local and index.is_file():
        entry = json.loads(index.read_text()).get(name)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] in ("diffusers", "transformers") and entry[1]:
            lib, cls = entry
    module = importlib.import_module(lib)
    if not hasattr(module, cls):
        raise ValueError(f"{name} of {path} is a {lib}.{cls}, which this installation does not provide")
    return getattr(module, cls)


def _transformers_dtype_kw(dtype) -> dict:
    if dtype is None:
        return {}
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def load_component(path: str, local: bool, name: str, default: str, *, revision=None, variant=None,
                   torch_dtype=None):
    """Load subfolder ``name`` with its class's from_pretrained (diffusers or transformers)."""
    cls = _component_class(path, local, name, default)
    kw: dict = {"subfolder": name}
    if revision is not None:
        kw["revision"] = revision
    is_tokenizer = "Tokenizer" in cls.__name__
    if not is_tokenizer:
        if variant is not None:
            kw["variant"] = variant
        if cls.__module__.startswith("transformers"):
            kw.update(_transformers_dtype_kw(torch_dtype))
        elif torch_dtype is not None:
            kw["torch_dtype"] = torch_dtype
    try:
        return cls.from_pretrained(path, **kw)
    except OSError as e:
        where = "folder" if local else "hub id"
        raise FileNotFoundError(f"could not load {name}/ of {where} {path!r} as {cls.__name__}: {e}") from e


def load_scheduler(path: str, local: bool, *, revision=None):
    """The scheduler named in scheduler/scheduler_config.json (any DDPM-type or FlowMatch* class)."""
    import diffusers

    kw = {"subfolder": "scheduler"}
    if revision is not None:
        kw["revision"] = revision
    try:
        config = diffusers.DDPMScheduler.load_config(path, **kw)
    except OSError as e:
        raise FileNotFoundError(f"could not read the scheduler config of {path!r}: {e}") from e
    cls = getattr(diffusers, str(config.get("_class_name", "DDPMScheduler")), None)
    if cls is None or not issubclass(cls, diffusers.SchedulerMixin):
        cls = diffusers.DDPMScheduler
    scheduler = cls.from_config(config)
    parametrisation_of(scheduler)  # raises for schedulers that are neither DDPM-type nor flow matching
    return scheduler


def open_pretrained(path_or_hub_id, required: Sequence[str], family: str, revision=None,
                    prediction_type: str | None = None):
    """(path, is_local, scheduler): check the folder layout, load the scheduler and check
    its prediction type (or the override) before any weights are loaded."""
    path, local = resolve_pretrained(path_or_hub_id, required, family)
    scheduler = load_scheduler(path, local, revision=revision)
    parametrisation_of(scheduler, prediction_type)  # an unsupported prediction type fails here
    return path, local, scheduler


def check_transformer_class(folder: str | Path, expected: str, family: str) -> None:
    """A local folder's transformer/ must hold a saved ``expected`` (its config's
    _class_name), checked before any weights are loaded."""
    config = Path(folder) / "transformer" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder}/transformer/ has no config.json: not a saved diffusers transformer")
    name = json.loads(config.read_text()).get("_class_name")
    if name != expected:
        raise ValueError(f"{folder}/transformer/ holds a {name}, not a {expected}; the {family} adapter loads "
                         f"{family} folders")


def require_flow(parametrisation, scheduler, family: str) -> None:
    """A flow-matching family's scheduler must be a FlowMatch* scheduler."""
    if not isinstance(parametrisation, FlowParametrisation):
        raise ValueError(f"{family} is a flow-matching model; its scheduler must be a FlowMatch* scheduler, got "
                         f"{type(scheduler).__name__}")


def model_proposal(path, local: bool) -> Piecewise | None:
    """The log-SNR proposal saved in a local model folder (proposal.PROPOSAL_FILE), or
    None (no file, or a hub id: nothing is fetched for it)."""
    if not local:
        return None
    file = Path(path) / PROPOSAL_FILE
    return load_proposal(file) if file.is_file() else None


def move(modules: Sequence[torch.nn.Module | None], device) -> None:
    if device is not None:
        for m in modules:
            if m is not None:
                m.to(device)
