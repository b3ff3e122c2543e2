"""Training a conditional denoiser on vector pairs (x, y), for I(X;Y) of a user's data.

The loss is the denoising loss of the noise channel of eq. (1) in logsnr.py,

    L = E_{(x, y), alpha ~ q, eps} w(alpha) || eps - eps_hat(x_alpha, alpha | c) ||^2 / dim_x,
    x_alpha = sqrt(sigma(alpha)) x + sqrt(sigma(-alpha)) eps,

with c = y, or the null condition with probability ``condition_dropout``, so that one
network gives both eps_hat(. | y) and eps_hat(. | null); x and y are normalized by the
datamodule's per-column map fitted on the training split, and the network corrects the
exact denoiser of a Gaussian fitted to the normalized training pairs (vector_mlp.py). q is the log-SNR sampler, by default the one the
estimators use (so training spends its effort where the estimate looks), and w is 1 or
the Min-SNR weight min(snr, gamma)/snr.

Every validation measures the held-out pairs through the estimators' own path: the
validation loss (``val/loss``: the mean of the conditional and null losses, on fixed
draws, for early stopping) and the information estimate ``val/mi_standard`` and
``val/mi_orthogonal`` with their standard errors, so TensorBoard shows I(X;Y) as the
network learns it. At the end of fit the weights of the best validation loss (EMA
weights when kept; the last ones with ``restore_best`` off) are saved as a
vector-denoiser folder (denoisers/vector.py) for analyze.py. Restoring the best weights
matters when the pairs are few for their dimension: there the network starts to
memorise its training pairs early, the held-out loss rises, and a memorising network
reads information that is not there.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal, Union

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..data.normalization import Normalization
from ..denoisers.vector import MLPDenoiser, NormalizedDenoiser, save_vector_denoiser
from ..integrate import AlphaSampler
from ..io import run_dir
from ..logsnr import noise_channel
from ..measure import DrawSpec, measure
from ..models.vector_mlp import ConditionalMLP
from ..protocols import VectorPairSource
from ..training import adamw_with_schedule, default_vector_sampler, min_snr_weight
from .ema import EMAWeights

__all__ = ["VectorMITrainer"]


#: With gaussian_baseline "auto", the fitted Gaussian baseline is used from this many
#: dimensions (dim_x + dim_y) on. bmi's tasks have 2-10 or 50-100: any value in 11..50
#: gives its table the same rows.
BASELINE_MIN_DIMS = 20


def uses_gaussian_baseline(option: Union[bool, str], dim_x: int, dim_y: int) -> bool:
    """Whether the network corrects a Gaussian fitted to the training pairs (the rule of
    the ``gaussian_baseline`` option)."""
    return (dim_x + dim_y >= BASELINE_MIN_DIMS) if option == "auto" else bool(option)


class VectorMITrainer(L.LightningModule):
    """Train a ConditionalMLP denoiser of x given y on a VectorPairSource datamodule.

    The network is built when fit starts, from the datamodule's dimensions, normalization
    and training pairs (the Gaussian baseline); a resumed run rebuilds the same ones.

    Args:
        width, depth, n_frequencies: the ConditionalMLP.
        sampler: the log-SNR distribution of training (and its range is the model's
            ``alpha_range``); default Logistic(0, 2) on [-8, 8].
        condition_dropout: probability of training a pair on the null condition.
        min_snr_gamma: Min-SNR loss weighting (None: uniform).
        learning_rate, weight_decay, warmup_steps, lr_schedule: AdamW and a diffusers
            schedule ("constant", "cosine", ...), stepped per optimizer step.
        gaussian_baseline: true: correct the exact denoiser of a Gaussian fitted to the
            training pairs; false: of a standard normal x independent of y; "auto" (default):
            the fitted Gaussian when dim_x + dim_y >= BASELINE_MIN_DIMS. Where the pairs are
            few for their dimension the fitted Gaussian is the better start; in a few
            dimensions the network learns the whole denoiser, and there (bmi's 1x1 tasks
            with additive noise) a fitted start held it near the Gaussian answer.
        ema_decay: keep an EMA of the weights, used for validation and saved (None: off).
        restore_best: save the weights of the lowest validation loss, not the last ones.
        val_draws: (alpha, eps) draws per held-out pair at each validation.
        export_dir: where the trained denoiser is saved (default <run folder>/vector_denoiser).
        seed: keys the validation draws.
    """

    def __init__(self, width: int = 256, depth: int = 3, n_frequencies: int = 16, sampler: AlphaSampler | None = None,
                 condition_dropout: float = 0.2, min_snr_gamma: float | None = None, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, warmup_steps: int = 100, lr_schedule: str = "cosine",
                 gaussian_baseline: Union[bool, Literal["auto"]] = "auto", ema_decay: float | None = 0.995, restore_best: bool = True,
                 val_draws: int = 8, export_dir: str | None = None, seed: int = 0):
        super().__init__()
        if not 0 < condition_dropout < 1:
            raise ValueError(f"condition_dropout must be in (0, 1): both conditionals are trained, got {condition_dropout}")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        if gaussian_baseline not in (True, False, "auto"):
            raise ValueError(f"gaussian_baseline must be true, false or auto, got {gaussian_baseline!r}")
        if val_draws < 2:
            raise ValueError(f"val_draws must be >= 2 for a standard error, got {val_draws}")
        self.save_hyperparameters(ignore=["sampler"])
        self.sampler = sampler if sampler is not None else default_vector_sampler()
        self.net: ConditionalMLP | None = None
        self.ema: EMAWeights | None = None
        self.norm: Normalization | None = None
        self.best: tuple[float, dict] | None = None  # (validation loss, weights) of the best validation

    # ---- the network, built from the data -------------------------------------
    def build(self, dim_x: int, dim_y: int, normalization: Normalization,
              train_pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Create the network (its Gaussian baseline fitted to the normalized ``train_pairs``)."""
        if self.net is not None:
            return
        h = self.hparams
        self.net = ConditionalMLP(dim_x, dim_y, h.width, h.depth, h.n_frequencies)
        self.norm = normalization
        if uses_gaussian_baseline(h.gaussian_baseline, dim_x, dim_y) and train_pairs is not None:
            self.net.fit_baseline(normalization.x(train_pairs[0]), normalization.y(train_pairs[1]))
        if h.ema_decay is not None:
            self.ema = EMAWeights(self.net.parameters(), h.ema_decay)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if not isinstance(dm, VectorPairSource):
            raise TypeError(f"VectorMITrainer needs a datamodule of vector pairs (dims, train_pairs(), "
                            f"normalization()), got {type(dm).__name__}")
        dim_x, dim_y = dm.dims
        self.build(dim_x, dim_y, dm.normalization(), dm.train_pairs())

    @property
    def denoiser(self) -> NormalizedDenoiser:
        """The network as the estimators see it: raw pairs in, normalized inside."""
        return NormalizedDenoiser(MLPDenoiser(self.net, self.sampler.range), self.norm)

    # ---- training --------------------------------------------------------------
    def training_step(self, batch, batch_idx: int):
        x, y = self.norm.x(batch[0].double()).float(), self.norm.y(batch[1].double()).float()
        alpha, _ = self.sampler.sample((x.shape[0],))  # stratified across the batch: a lower-variance gradient
        alpha = alpha.to(x)
        eps = torch.randn_like(x)
        null = torch.rand(x.shape[0], device=x.device) < self.hparams.condition_dropout
        y = torch.where(null[:, None], torch.full_like(y, float("nan")), y)
        pred = self.net(noise_channel(x, alpha, eps), alpha, y)
        per = ((pred - eps) ** 2).mean(1)
        if self.hparams.min_snr_gamma is not None:
            per = per * min_snr_weight(alpha.double().exp(), self.hparams.min_snr_gamma, "epsilon").to(per)
        loss = per.mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net.parameters(), self.trainer.global_step, self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        ids = [int(i) for i in batch["id"]]
        with self._averaged():
            den = self.denoiser
            draws = DrawSpec(self.hparams.val_draws, self.hparams.seed, self.sampler)
            m = measure(den, {"null": den.null_conditions(len(ids)), "y": batch["y"]}, {"mi": ("null", "y")},
                        images=batch["x"], ids=ids, draws=draws)
        errors, x = m.errors, m.x
        n = len(ids)
        self._val_sums += torch.stack([errors.mse.mean((1, 2)).sum(), torch.tensor(float(n), dtype=errors.mse.dtype)]).to(
            self._val_sums)
        self.log("val/loss", errors.mse.mean() / x.shape[1], batch_size=n, sync_dist=True, prog_bar=True)
        for est in ("standard", "orthogonal"):
            e = m.estimate("mi", est)
            self.log(f"val/mi_{est}", e.value.mean(), batch_size=n, sync_dist=True, prog_bar=est == "standard")
            self.log(f"val/mi_{est}_stderr", e.value.std() / n**0.5, batch_size=n, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # (sum of losses, pairs)

    def on_validation_epoch_end(self) -> None:
        # The sanity check counts too: it sees the weights before the first step (the
        # Gaussian baseline), which can be the best when the pairs are few for their
        # dimension. A collective: every rank calls it.
        total, n = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum").tolist()
        loss = total / max(n, 1.0) / self.net.dim_x
        if self.hparams.restore_best and (self.best is None or loss < self.best[0]):
            with self._averaged():
                self.best = (loss, {k: v.detach().clone() for k, v in self.net.state_dict().items()})

    def _averaged(self):
        return self.ema.applied(self.net.parameters()) if self.ema is not None else contextlib.nullcontext()

    def configure_optimizers(self):
        h = self.hparams
        return adamw_with_schedule(self.net.parameters(), h.learning_rate, h.weight_decay, h.lr_schedule,
                                   h.warmup_steps, int(self.trainer.estimated_stepping_batches))

    # ---- checkpoints and export --------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:
            self.ema.save(checkpoint)
        checkpoint["best_validation"] = self.best

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:
            self.ema.load(checkpoint)
        self.best = checkpoint.get("best_validation")

    def save_denoiser(self, folder: str | Path) -> Path:
        """Save the network (EMA weights when kept) as a vector-denoiser folder."""
        with self._averaged():
            return save_vector_denoiser(folder, self.net, self.sampler.range, self.norm)

    def on_fit_end(self) -> None:
        if self.best is not None:  # the best validation's weights (EMA already applied) become the model
            rank_zero_info(f"restoring the weights of the best validation loss ({self.best[0]:.5f})")
            self.net.load_state_dict(self.best[1])
            self.ema = None
        folder = Path(self.hparams.export_dir) if self.hparams.export_dir else run_dir(self.trainer) / "vector_denoiser"
        if self.trainer.is_global_zero:
            self.save_denoiser(folder)
            rank_zero_info(f"trained denoiser saved to {folder}")
