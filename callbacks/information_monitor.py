"""InformationMonitor: track what a model learns about words and pixels while it trains.

Every ``every_n_steps`` optimizer steps (and/or at validation end) the monitor measures a
fixed probe set with fixed (alpha, eps) draws, so successive points of a curve differ
only because the model changed:

- info/mi/value, info/mi/stderr            image-level io(x; caption)
- info/cmi/<word>/value, .../stderr         io(x; word | caption without the word), over
                                            the probe captions that contain the word
- info/pid/<w1>+<w2>/<term>/value, ...      conditional PID terms of word pairs (if pairs)
- images info/maps/<word>                   CMI heat map over the first probe image with the word
- figure info/mmse                          MMSE of null and full caption over log-SNR
                                            (eps keyed by probe id: the same on any number of ranks)
- info/monitor/time_share, info/monitor/ema share of wall time spent here; 1 if EMA weights measured

A stderr over several images is std over images / sqrt(count); over a single image it
is that image's own Monte-Carlo error: never 0 unless known to be 0.

The probe is split across ranks and reduced with torchmetrics; every rank calls every
collective, only TensorBoard writing is rank zero.
"""
from __future__ import annotations

import time
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from infodiff_lightning.contrasts import caption_contrasts, contains_word
from infodiff_lightning.draws import draws_for_ids
from infodiff_lightning.estimators import Estimate, default_sampler
from infodiff_lightning.metrics import InformationMap, PartialInformation, PointwiseInformation
from infodiff_lightning.mmse import mmse_curve, mmse_eps_for_ids
from infodiff_lightning.pid import PID_TERMS
from infodiff_lightning.viz import mmse_figure, overlay

__all__ = ["InformationMonitor"]

#: The MMSE-figure eps of a probe image come from id_generator(seed + this, id), so they
#: are keyed by probe id like the estimator draws (id_generator(seed, id)) yet differ from them.
MMSE_SEED_OFFSET = 1


class InformationMonitor(Callback):
    """Measure MI, per-word CMI (and PID of word pairs) on a fixed probe set during fit.

    Args:
        words: words whose CMI is tracked (each must occur in some probe caption).
        pairs: word pairs whose conditional PID is tracked (given the rest of the caption).
        probe_size: number of probe items taken from ``datamodule.probe_items``.
        every_n_steps: cadence in optimizer steps (None: off); must be >= 1.
        at_validation_end: also measure after each validation loop.
        n_draws: (alpha, eps) draws per probe image, fixed for the whole run.
        condition: how a word is removed: "delete", "placeholder" or "mask".
        maps: log CMI heat-map overlays; mmse_points: alpha grid size for the MMSE figure (0: off).
        use_ema: measure the EMA weights when the module keeps them.
        seed, microbatch: draws seed; denoiser inputs per call.
    """

    def __init__(self, words: Sequence[str] = (), pairs: Sequence[Sequence[str]] = (), probe_size: int = 8,
                 every_n_steps: int | None = 50, at_validation_end: bool = False, n_draws: int = 32,
                 condition: str = "delete", maps: bool = True, mmse_points: int = 9, mmse_eps: int = 2,
                 use_ema: bool = True, seed: int = 0, microbatch: int = 256):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"InformationMonitor: every_n_steps must be >= 1 (or null to disable), got {every_n_steps}")
        if every_n_steps is None and not at_validation_end:
            raise ValueError("InformationMonitor: no cadence: set every_n_steps and/or at_validation_end")
        if probe_size < 1 or n_draws < 2:
            raise ValueError(f"InformationMonitor: need probe_size >= 1 and n_draws >= 2, got {probe_size}, {n_draws}")
        self.words = list(words)
        self.pairs = [tuple(p) for p in pairs]
        if any(len(p) != 2 for p in self.pairs):
            raise ValueError(f"InformationMonitor: pairs must be pairs of words, got {self.pairs}")
        self.probe_size, self.every_n_steps, self.at_validation_end = probe_size, every_n_steps, at_validation_end
        self.n_draws, self.condition, self.maps = n_draws, condition, maps
        self.mmse_points, self.mmse_eps, self.use_ema = mmse_points, mmse_eps, use_ema
        self.seed, self.microbatch = seed, microbatch
        self.history: list[int] = []  # steps measured (saved with the checkpoint)
        self.monitor_seconds = 0.0
        self._fit_start = None
        self._probe: list[dict] | None = None

    # ---- start-up checks: fail before any training time is spent ---------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "probe_items"):
            raise ValueError("InformationMonitor needs a datamodule with probe_items(n) (e.g. CaptionedShapesData)")
        probe = dm.probe_items(self.probe_size)
        size = pl_module.image_size
        for item in probe:
            if tuple(item["image"].shape) != (3, size, size):
                raise ValueError(f"InformationMonitor: probe image {item['id']} has shape {tuple(item['image'].shape)}, "
                                 f"the model takes (3, {size}, {size})")
        tok = pl_module.tokenizer
        for w in self.words + [w for p in self.pairs for w in p]:
            if not any(contains_word(it["caption"], w, tok) for it in probe):
                raise ValueError(f"InformationMonitor: word {w!r} occurs in none of the {len(probe)} probe captions")
        for w1, w2 in self.pairs:
            if not any(contains_word(it["caption"], w1, tok) and contains_word(it["caption"], w2, tok) for it in probe):
                raise ValueError(f"InformationMonitor: no probe caption contains both {w1!r} and {w2!r}")
        self._probe = probe

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    # ---- cadence ----------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # counts optimizer steps, so gradient accumulation is handled
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step not in self.history:
            self.measure(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.at_validation_end and not trainer.sanity_checking and trainer.state.fn == "fit":
            self.measure(trainer, pl_module, record=trainer.global_step not in self.history)

    # ---- measurement -------------------------------------------------------------
    def _new_metrics(self, device, map_shape, n_alpha):
        m = {"mi": PointwiseInformation()}
        for w in self.words:
            m[f"cmi/{w}"] = PointwiseInformation()
        for w1, w2 in self.pairs:
            m[f"pid/{w1}+{w2}"] = PartialInformation()
        if self.mmse_points:
            m["mmse_curve"] = InformationMap((2, n_alpha))
        return {k: v.to(device) for k, v in m.items()}

    @torch.no_grad()
    def measure(self, trainer, pl_module, record: bool = True) -> dict:
        t0 = time.perf_counter()
        rank, world = trainer.global_rank, trainer.world_size
        local = self._probe[rank::world]
        was_training = pl_module.training
        pl_module.eval()
        results: dict = {}
        try:
            with pl_module.ema_weights(self.use_ema) as on_ema:
                denoiser = pl_module.denoiser()
                sampler = default_sampler(denoiser)
                alphas = torch.linspace(*sampler.range, self.mmse_points, dtype=torch.float64) if self.mmse_points else None
                shape = pl_module.sample_shape
                metrics = self._new_metrics(pl_module.device, shape[1:], self.mmse_points)
                local_maps = {}
                if local:
                    local_maps = self._measure_local(pl_module, denoiser, local, sampler, alphas, metrics)
                for name, metric in metrics.items():  # collectives: every rank, same order
                    results[name] = metric.compute()
            self.monitor_seconds += time.perf_counter() - t0  # before logging, so the share includes this one
            self._log(trainer, results, local_maps, alphas, bool(on_ema))
        finally:
            pl_module.train(was_training)
        if record:
            self.history.append(trainer.global_step)
        return results

    def _measure_local(self, pl_module, denoiser, items, sampler, alphas, metrics) -> dict:
        captions = [it["caption"] for it in items]
        x = pl_module.encode_images(torch.stack([it["image"] for it in items]))
        # Fixed for the whole run: keyed by (seed, probe id), never by step or rank.
        draws = draws_for_ids([it["id"] for it in items], self.n_draws, tuple(x.shape[1:]), sampler, self.seed)
        res = caption_contrasts(denoiser, x, captions, self.words, self.pairs, tokenizer=pl_module.tokenizer,
                                method=self.condition, draws=draws, maps=self.maps, microbatch=self.microbatch)
        metrics["mi"].update(res.mi)
        local_maps = {}
        for w, est in res.cmi.items():
            has = res.present[w]
            if bool(has.any()):  # with each image's own stderr, so one image has a known error
                metrics[f"cmi/{w}"].update(Estimate(est.value[has], est.stderr[has], est.n_evals))
                if est.map is not None:
                    first = int(has.nonzero()[0])
                    local_maps[w] = (items[first]["image"], est.map[first])
        for (w1, w2), pid in res.pid.items():
            has = res.present[(w1, w2)]
            if bool(has.any()):
                metrics[f"pid/{w1}+{w2}"].update(pid.values()[has], pid.stderrs()[has])
        if alphas is not None:
            metrics["mmse_curve"].update(self.mmse_per_image(denoiser, x, items, alphas))
        return local_maps

    def mmse_per_image(self, denoiser, x, items, alphas) -> torch.Tensor:
        """(N, 2, G) MMSE curves of the null and full caption of each probe item.

        Each item's eps are keyed by (seed + MMSE_SEED_OFFSET, its id), so an item's curve
        is the same whichever rank measures it and whatever items share its batch."""
        eps = mmse_eps_for_ids([it["id"] for it in items], len(alphas), self.mmse_eps, tuple(x.shape[1:]),
                               self.seed + MMSE_SEED_OFFSET)
        columns = [denoiser.null_conditions(len(items)), [it["caption"] for it in items]]
        return mmse_curve(denoiser, x, columns, alphas, eps=eps, microbatch=self.microbatch).per_image

    def _log(self, trainer, results, local_maps, alphas, on_ema: bool) -> None:
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        scalars = {}
        for name, r in results.items():
            if not isinstance(r, dict):
                continue
            # stderrs as computed: over one image, its own Monte-Carlo error -- never a made-up 0.
            if name.startswith("pid/"):
                for term in PID_TERMS:
                    scalars[f"info/{name}/{term}/value"] = float(r[term])
                    scalars[f"info/{name}/{term}/stderr"] = float(r[f"{term}_stderr"])
            else:
                scalars[f"info/{name}/value"] = float(r["mean"])
                scalars[f"info/{name}/stderr"] = float(r["stderr"])
        elapsed = time.perf_counter() - (self._fit_start or time.perf_counter())
        scalars["info/monitor/time_share"] = self.monitor_seconds / elapsed if elapsed > 0 else 0.0
        scalars["info/monitor/ema"] = 1.0 if on_ema else 0.0
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if isinstance(logger, TensorBoardLogger):
                exp = logger.experiment
                for w, (image, heat) in local_maps.items():
                    exp.add_image(f"info/maps/{w}", overlay(image, heat), global_step=step)
                if "mmse_curve" in results:
                    fig = mmse_figure(alphas, results["mmse_curve"], ["null prompt", "caption"],
                                      title=f"step {step}" + (" (EMA weights)" if on_ema else ""))
                    exp.add_figure("info/mmse", fig, global_step=step)

    # ---- checkpointing -------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": list(self.history), "monitor_seconds": self.monitor_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self.monitor_seconds = float(state_dict.get("monitor_seconds", 0.0))
