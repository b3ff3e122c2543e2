"""Fine-tuning a diffusers text-to-image model with its own denoising loss.

    L = E_{x0, c, t, eps} w(t) || target(x0, eps, t) - f_theta(x_t, t, c) ||^2

The adapter's parametrisation (denoisers/parametrisation.py) draws (x_t, t, target):
for DDPM-type models x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with t uniform over the
table (the channel of eq. (1) at alpha = log(abar_t / (1 - abar_t))) and target = eps,
v = sqrt(abar) eps - sqrt(1 - abar) x0, or x0 by the model's prediction type; for
flow-matching models (SD3) x_s = (1 - s) x0 + s eps with s from ``flow_time_density``
(logit-normal by default, as SD3 was trained) and target v = eps - x0. w(t) = 1 or,
for DDPM-type models, the Min-SNR weight (Hang et al. 2023): min(snr, gamma)/snr
(epsilon), min(snr, gamma)/(snr + 1) (v), min(snr, gamma) (sample).

The fine-tuner holds the same denoiser adapter the estimators use
(``denoisers.load_text_to_image``, or a pixel adapter over a tiny model built from
scratch): x0 is the adapter's ``encode`` (VAE latents with the VAE's shift and scale),
the schedule is the scheduler class saved in the folder, text goes through the adapter's
prompt encoder and the prediction type is the adapter's. Training and measurement see
the same x.

Caption dropout (empty prompt) and word dropout (whole words deleted the way the CMI
estimator deletes them) keep the conditionals that CMI and PID query in distribution.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from ..conditions import drop_words
from ..denoisers import PixelTextDenoiser, load_text_to_image
from ..denoisers.diffusers_common import DiffusersDenoiser
from ..denoisers.parametrisation import FlowParametrisation
from ..proposal import PROPOSAL_FILE, save_proposal
from ..io import run_dir
from ..models.tiny import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from ..training import adamw_with_schedule, min_snr_weight
from .ema import EMAWeights

__all__ = ["DiffusionFineTuner"]


class DiffusionFineTuner(L.LightningModule):
    """Fine-tune the backbone (UNet or transformer; full or LoRA) of a diffusers text-to-image model.

    Args:
        pretrained: a diffusers folder of any family ``load_text_to_image`` loads, or hub id.
        revision, variant: passed to from_pretrained.
        scratch: build a tiny pixel-space model from this spec instead (no ``pretrained``).
        lora_rank: 0 trains the full backbone; > 0 trains LoRA adapters (peft) on ``lora_targets``.
        lora_alpha: LoRA scaling numerator (default: lora_rank).
        lora_targets: module names to adapt (default: the adapter's ``lora_targets``, the
            attention projections of its family).
        init_lora: start the LoRA from this adapter (a ``unet_lora/`` or ``transformer_lora/``
            folder exported by an earlier LoRA run of the same base model) instead of a fresh
            one: its weights, rank and targets are continued (MI-TUNE's later rounds).
            ``lora_rank`` must equal the adapter's rank; ``lora_targets`` and ``lora_alpha``
            must be unset.
        train_text_encoder: also train the (first) text encoder (frozen by default; the VAE always is).
        ema_decay: keep an EMA of the trained weights (None: off).
        min_snr_gamma: Min-SNR loss weighting (None: uniform; DDPM-type models only).
        flow_time_density, logit_mean, logit_std: how flow-matching models draw the flow time
            s in training ("logit_normal" with mean and std of logit(s), SD3's default, or
            "uniform"); refused for DDPM-type models.
        gradient_checkpointing: trade compute for memory in the backbone (and text encoder).
        learning_rate, weight_decay, warmup_steps, lr_schedule: AdamW and a diffusers schedule
            ("constant", "linear", "cosine", ...), stepped per optimizer step.
        caption_dropout: probability of training on the empty prompt.
        word_dropout: probability of deleting each word of a caption (whole-word deletion).
        export_dir: where the fine-tuned model is saved in diffusers format at the end of fit
            (default: <run folder>/diffusers); LoRA runs save only the adapter (unet_lora/ or
            transformer_lora/).
    """

    def __init__(self, pretrained: str | None = None, revision: str | None = None, variant: str | None = None,
                 scratch: TinyTextToImageSpec | None = None, lora_rank: int = 0, lora_alpha: float | None = None,
                 lora_targets: Sequence[str] | None = None, init_lora: str | None = None,
                 train_text_encoder: bool = False, ema_decay: float | None = None, min_snr_gamma: float | None = None,
                 flow_time_density: str | None = None, logit_mean: float = 0.0, logit_std: float = 1.0,
                 gradient_checkpointing: bool = False, learning_rate: float = 1e-4, weight_decay: float = 1e-2,
                 warmup_steps: int = 0, lr_schedule: str = "constant", caption_dropout: float = 0.1,
                 word_dropout: float = 0.0, export_dir: str | None = None, seed: int = 0):
        super().__init__()
        if (pretrained is None) == (scratch is None):
            raise ValueError("give exactly one of `pretrained` (a diffusers folder or hub id) and `scratch` (a tiny model spec)")
        for name, p in (("caption_dropout", caption_dropout), ("word_dropout", word_dropout)):
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
        if init_lora is not None and (lora_rank == 0 or lora_targets is not None or lora_alpha is not None):
            # the adapter's own targets and scaling are continued; a value given here would be ignored
            raise ValueError("init_lora continues an adapter: set lora_rank to its rank and leave lora_targets and "
                             f"lora_alpha unset (got lora_rank={lora_rank}, lora_targets={lora_targets}, "
                             f"lora_alpha={lora_alpha})")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        self.save_hyperparameters()
        if scratch is not None:
            comps = build_tiny_text_to_image(scratch)
            adapter: DiffusersDenoiser = PixelTextDenoiser(comps["unet"], comps["text_encoder"], comps["tokenizer"],
                                                           comps["scheduler"])
        else:
            adapter = load_text_to_image(pretrained, revision=revision, variant=variant)
        self.adapter = adapter  # the estimators' view of the modules below (not an nn.Module)
        param = adapter.parametrisation
        if isinstance(param, FlowParametrisation):
            if min_snr_gamma is not None:
                raise ValueError("min_snr_gamma applies to DDPM-type models; this is a flow-matching model "
                                 "(weight its flow times with flow_time_density instead)")
            adapter.parametrisation = FlowParametrisation(param.num_train_timesteps, param.timestep_scale,
                                                          density=flow_time_density or "logit_normal",
                                                          logit_mean=logit_mean, logit_std=logit_std)
        elif flow_time_density is not None:
            raise ValueError(f"flow_time_density applies to flow-matching models; {pretrained or 'this model'} has a "
                             "DDPM-type schedule (its timesteps are drawn uniformly)")
        # Registered here so that Lightning moves, trains and checkpoints them: the backbone,
        # and every other network of the adapter (text encoders, VAE), frozen unless
        # train_text_encoder unfreezes the first text encoder below.
        self.backbone = adapter.backbone
        self.others = torch.nn.ModuleList([m for m in adapter.modules() if m is not adapter.backbone])
        self.others.requires_grad_(False)
        if lora_rank > 0:
            from peft import LoraConfig

            self.backbone.requires_grad_(False)
            if init_lora is not None:
                self._continue_lora(init_lora, lora_rank)
            else:
                targets = list(lora_targets if lora_targets is not None else adapter.lora_targets)
                self.backbone.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_alpha or lora_rank,
                                                     init_lora_weights="gaussian", target_modules=targets))
        trained_text = adapter.text_encoders()[0] if train_text_encoder else None
        if trained_text is not None:
            trained_text.requires_grad_(True)
        if gradient_checkpointing:
            self.backbone.enable_gradient_checkpointing()
            if trained_text is not None:
                trained_text.gradient_checkpointing_enable()
        # from_pretrained returns eval-mode modules; train what is trained, keep the rest in eval.
        self.others.eval()
        self.backbone.train()
        if trained_text is not None:
            trained_text.train()
        self.ema = EMAWeights(self.trainable_parameters(), ema_decay) if ema_decay is not None else None
        # Frozen weights come from `pretrained`; checkpoints keep only what training changes.
        self.strict_loading = False

    def _continue_lora(self, folder: str, rank: int) -> None:
        """Load the adapter in ``folder`` as the trained LoRA (named "default", the name the
        export saves) and make its weights trainable; its rank must be ``rank``."""
        self.adapter.load_lora(folder, adapter_name="default")
        got = self.backbone.peft_config["default"].r
        if got != rank:
            raise ValueError(f"init_lora: the adapter in {folder} has rank {got}, but lora_rank is {rank}")
        for name, p in self.backbone.named_parameters():
            if "lora_" in name:  # peft's lora_A / lora_B weights of the "default" adapter
                p.requires_grad_(True)

    # ---- what is trained ------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    # ---- data to model inputs: the adapter's, as the estimators see them ------
    def clean_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """x0 of the loss: the adapter's ``encode`` (the x the estimators integrate over)."""
        return self.adapter.encode(images)

    @property
    def denoiser(self) -> DiffusersDenoiser:
        """The adapter over the live modules, its caches cleared on each access (the weights
        change while training)."""
        self.adapter.clear_cache()
        return self.adapter

    @contextlib.contextmanager
    def ema_weights(self, use: bool = True):
        """Temporarily swap in the EMA weights (no-op without EMA or when ``use`` is False)."""
        if self.ema is None or not use:
            yield False
            return
        with self.ema.applied(self.trainable_parameters()):
            yield True

    # ---- training ----------------------------------------------------------
    def _dropped_captions(self, captions: Sequence[str]) -> list[str]:
        g = torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)
        out = []
        for c in captions:
            if float(torch.rand((), generator=g)) < self.hparams.caption_dropout:
                out.append("")
            elif self.hparams.word_dropout > 0:
                out.append(drop_words(c, self.hparams.word_dropout, g))
            else:
                out.append(c)
        return out

    def loss(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        x0 = self.clean_inputs(images)
        noise = torch.randn_like(x0)
        draw = self.adapter.parametrisation.training_draw(x0, noise)
        pred = self.adapter.model_output(draw.x_in, draw.t, list(captions), train=True)
        per = F.mse_loss(pred.float(), draw.target.float(), reduction="none").flatten(1).mean(1)
        if self.hparams.min_snr_gamma is not None:
            snr = draw.logsnr.double().exp()
            per = per * min_snr_weight(snr, self.hparams.min_snr_gamma, self.adapter.prediction_type).to(per.dtype)
        return per.mean()

    def training_step(self, batch, batch_idx: int):
        loss = self.loss(batch["image"], self._dropped_captions(batch["caption"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch, batch_idx: int):
        g = torch.Generator(device="cpu").manual_seed(self.hparams.seed + batch_idx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
            loss = self.loss(batch["image"], batch["caption"])
        self.log("val/loss", loss, sync_dist=True, batch_size=len(batch["caption"]))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.trainable_parameters(), self.trainer.global_step, self.device)

    def configure_optimizers(self):
        h = self.hparams
        return adamw_with_schedule(self.trainable_parameters(), h.learning_rate, h.weight_decay, h.lr_schedule,
                                   h.warmup_steps, int(self.trainer.estimated_stepping_batches))

    # ---- checkpoints and export ----------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        if self.ema is not None:
            self.ema.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # checkpoints written before the modules were named generically keep the backbone
        # under "unet." and a trained text encoder (the adapter's second network) under "text_encoder."
        state = checkpoint.get("state_dict", {})
        for old, new in (("unet.", "backbone."), ("text_encoder.", "others.0.")):
            for key in [k for k in state if k.startswith(old)]:
                state[new + key[len(old):]] = state.pop(key)
        if self.ema is not None:
            self.ema.load(checkpoint)

    def save_pretrained(self, folder: str | Path, use_ema: bool = True) -> Path:
        """Save in diffusers format: all components, or only the LoRA adapter (:meth:`lora_folder_name`)."""
        folder = Path(folder)
        with self.ema_weights(use_ema):
            if self.hparams.lora_rank > 0:
                self.backbone.save_lora_adapter(str(folder / self.lora_folder_name()))
            else:
                save_components(self.adapter.components(), folder)
                # the pretrained model's log-SNR proposal travels with its fine-tuned weights
                # (a LoRA folder is loaded over its base folder, which keeps its own)
                if self.adapter.alpha_proposal is not None:
                    save_proposal(self.adapter.alpha_proposal, folder / PROPOSAL_FILE,
                                  {"source": f"the proposal of {self.hparams.pretrained}"})
        return folder

    def lora_folder_name(self) -> str:
        """Where a LoRA export keeps the adapter: ``<backbone folder>_lora`` (unet_lora for UNet
        families, transformer_lora for SD3 and Flux)."""
        name = next(k for k, v in self.adapter.components().items() if v is self.adapter.backbone)
        return f"{name}_lora"

    def on_fit_end(self) -> None:
        folder = Path(self.hparams.export_dir) if self.hparams.export_dir else run_dir(self.trainer) / "diffusers"
        if self.trainer.is_global_zero:
            self.save_pretrained(folder)
            rank_zero_info(f"fine-tuned model saved to {folder}")
