"""InformationMonitor: track what a model learns about words and pixels while it trains.

Every ``every_n_steps`` optimizer steps (and/or at validation end) the monitor measures a
fixed probe set with fixed (alpha, eps) draws, so successive points of a curve differ
only because the model changed:

- info/mi/value, info/mi/stderr            image-level io(x; caption)
- info/cmi/<word>/value, .../stderr         io(x; word | caption without the word), over
                                            the probe captions that contain the word
- info/pid/<w1>+<w2>/<term>/value, ...      conditional PID terms of word pairs (if pairs)
- figure info/maps/<word>                   image | CMI map (colour scale in nats) | overlay,
                                            for the first probe image with the word
- figure info/mmse                          MMSE of null and full caption over log-SNR, mean over
                                            the first ``mmse_images`` probe images (eps keyed by
                                            probe id: the same on any number of ranks)
- info/monitor/time_share, info/monitor/ema share of wall time spent here; 1 if EMA weights measured

Each measurement is also appended to ``monitor.jsonl`` in the run folder (step, EMA flag,
the summary {tag: {mean, stderr, images}}): the curves as data. ``at_fit_start`` adds a
measurement at step 0, the "before" of a fine-tuning run.

Cost: ``mi_images`` and ``word_images`` measure each quantity on its first probe images only
(an image measuring nothing costs nothing), so a large probe can give a rare word many
images cheaply; ``max_time_share`` (default 0.05) bounds the monitor's share of the run's wall time.
The monitor times its own work (measurements, their logging and figures, and the start-up
check of the probe) and the
wall time since fit start; a scheduled measurement is skipped when taking it, at the cost
of the previous measurement, would lift the cumulative share above ``max_time_share``.
The run's first measurement and a final one at the last step are always taken, so the
change over the run is always measured; on a short run these two alone can exceed the
share, and ``info/monitor/time_share`` then says so. ``max_time_share=None`` is the fixed
cadence: every scheduled measurement, no added final one.

The measurement is the one every job shares (infodiff_lightning.measurement): a
:class:`MeasurementSpec`, :func:`measure_captions` and :class:`CaptionMetrics`. The
module must be a :class:`MeasurableModule` and the datamodule a :class:`ProbeData`.
The probe is split across ranks and reduced with torchmetrics; every rank calls every
collective, only TensorBoard writing is rank zero.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from ..contrasts import cmi_tag, measurable, mi_tag, pid_tag
from ..estimators import default_sampler
from ..io import json_line, log_scalars, run_dir
from ..measurement import CaptionMetrics, MeasurementSpec, measure_captions, scalars
from ..metrics import InformationMap
from ..mmse import mmse_curve, mmse_eps_for_ids
from ..protocols import MeasurableModule, ProbeData
from ..runs.viz import map_figure, mmse_figure

__all__ = ["InformationMonitor"]

#: The MMSE-figure eps of a probe image come from id_generator(seed + this, id), so they
#: are keyed by probe id like the estimator draws (id_generator(seed, id)) yet differ from them.
MMSE_SEED_OFFSET = 1
#: Each measurement is appended to this JSONL file in the run folder: {"step", "ema", "summary"}.
MONITOR_RECORDS = "monitor.jsonl"


class InformationMonitor(Callback):
    """Measure MI, per-word CMI (and PID of word pairs) on a fixed probe set during fit.

    Args:
        words: words whose CMI is tracked (each must occur in some probe caption).
        pairs: word pairs whose conditional PID is tracked (given the rest of the caption).
        probe_size: number of probe items taken from ``datamodule.probe_items``.
        every_n_steps: cadence in optimizer steps (None: off); must be >= 1.
        at_validation_end: also measure after each validation loop.
        at_fit_start: also measure before the first step (step 0: the "before" of a fine-tuning run).
        max_time_share: most share of wall time the monitor may take (default 0.05, in (0, 1]):
            a measurement due by ``every_n_steps`` or ``at_validation_end`` is skipped when,
            at the previous measurement's cost, it would lift the monitor's cumulative share
            of wall time since fit start above this. The first measurement and a final one
            at the end of training are always taken (on a very short run these two alone can
            exceed the share; ``info/monitor/time_share`` reports it as it is). Under DDP
            rank zero's timings decide for every rank. None: the fixed cadence (every
            scheduled measurement, no added final one).
        n_draws: (alpha, eps) draws per probe image, fixed for the whole run (with a target:
            the draws of each round).
        target_stderr, target_relative, max_draws: adaptive precision: each probe image
            draws rounds of ``n_draws`` until its MI and CMIs have a standard error of at
            most ``target_stderr`` nats or ``target_relative`` x |value| (at most
            ``max_draws``); None (both): a fixed ``n_draws``.
        condition: how a word is removed: "delete", "placeholder" or "mask".
        maps: log CMI heat-map overlays; mmse_points: alpha grid size for the MMSE figure (0: off).
        mmse_images: the MMSE figure's curves are the mean over the first this many probe
            images (default 8; None: every probe image). The figure shows the curves' shape;
            at every probe image it cost as much as a fifth of a measurement of the demo's
            48-image probe (BENCHMARKS.md "The monitor's share").
        mi_images: the caption MI over the first this many probe images (None: every one).
        word_images: each word's CMI, and each pair's PID, over at most the first this many
            probe images that hold it (None: every one); or {word: count} for the words named
            (the others, and the pairs, over every image that holds them). With both, a large probe gives a
            tracked word many images at the cost of those images only: an image outside
            the MI's and a word's first images costs no denoiser input (measurement.py
            ``where``). The separation of a word's change over a run grows with the number
            of images that hold it (BENCHMARKS.md "The monitor's share").
        use_ema: measure the EMA weights when the module keeps them.
        seed, microbatch: draws seed; denoiser inputs per call (None: the model's default).
    """

    def __init__(self, words: Sequence[str] = (), pairs: Sequence[Sequence[str]] = (), probe_size: int = 8,
                 every_n_steps: int | None = 50, at_validation_end: bool = False, at_fit_start: bool = False,
                 max_time_share: float | None = 0.05, n_draws: int = 32,
                 condition: str = "delete", maps: bool = True, mmse_points: int = 9, mmse_eps: int = 2,
                 mmse_images: int | None = 8, mi_images: int | None = None,
                 word_images: int | dict[str, int] | None = None,
                 use_ema: bool = True, seed: int = 0, microbatch: int | None = None,
                 target_stderr: float | None = None, target_relative: float | None = None, max_draws: int = 256):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"InformationMonitor: every_n_steps must be >= 1 (or null to disable), got {every_n_steps}")
        if every_n_steps is None and not at_validation_end:
            raise ValueError("InformationMonitor: no cadence: set every_n_steps and/or at_validation_end")
        if probe_size < 1:
            raise ValueError(f"InformationMonitor: probe_size must be >= 1, got {probe_size}")
        if mmse_images is not None and mmse_images < 1:
            raise ValueError(f"InformationMonitor: mmse_images must be >= 1 (or null for every probe image), "
                             f"got {mmse_images}")
        caps = word_images.items() if isinstance(word_images, dict) else [("", word_images)]
        for name, value in [("mi_images", mi_images)] + [(f"word_images{'.' + w if w else ''}", v) for w, v in caps]:
            if value is not None and value < 1:
                raise ValueError(f"InformationMonitor: {name} must be >= 1 (or null for every probe image), got {value}")
        if isinstance(word_images, dict) and (unknown := sorted(set(word_images) - set(words))):
            raise ValueError(f"InformationMonitor: word_images names {', '.join(map(repr, unknown))}, which is not "
                             f"among the words tracked ({', '.join(words)})")
        if max_time_share is not None and not 0 < max_time_share <= 1:
            raise ValueError(f"InformationMonitor: max_time_share must be in (0, 1] (or null for the fixed cadence), "
                             f"got {max_time_share}")
        try:
            self.spec = MeasurementSpec(tuple(words), tuple(tuple(p) for p in pairs), condition, n_draws, seed, maps,
                                        microbatch, target_stderr, target_relative, max_draws)
        except ValueError as e:
            raise ValueError(f"InformationMonitor: {e}") from None
        self.probe_size, self.every_n_steps, self.at_validation_end = probe_size, every_n_steps, at_validation_end
        self.at_fit_start, self.max_time_share = at_fit_start, max_time_share
        self.mmse_points, self.mmse_eps, self.mmse_images, self.use_ema = mmse_points, mmse_eps, mmse_images, use_ema
        self.mi_images, self.word_images = mi_images, word_images
        # Saved with the checkpoint, so a resumed run neither repeats a point nor restarts
        # its time accounting (the share is over the whole run, across resumes).
        self.history: list[int] = []  # steps measured
        self.skipped: list[int] = []  # steps due but skipped to keep within max_time_share
        self.monitor_seconds = 0.0  # the monitor's own time: measurements and the start-up check
        self.last_seconds: float | None = None  # the last measurement's time: the next one's predicted cost
        self._wall_before = 0.0  # wall seconds of earlier sessions of this run (from the checkpoint)
        self._fit_start = None
        self._probe: list[dict] | None = None
        self._where: dict[str, set] = {}  # tag -> the probe ids it is measured on (mi_images, word_images)
        self._records: Path | None = None  # set in setup (the run folder is known then)

    # ---- start-up checks: fail before any training time is spent ---------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if not isinstance(dm, ProbeData):
            raise ValueError("InformationMonitor needs a datamodule with probe_items(n) (the ProbeData protocol, "
                             f"e.g. CaptionedShapesData); got {type(dm).__name__}")
        if not isinstance(pl_module, MeasurableModule):
            raise ValueError("InformationMonitor needs a module with a denoiser property and ema_weights(use) (the "
                             f"MeasurableModule protocol, e.g. DiffusionFineTuner); got {type(pl_module).__name__}")
        probe = dm.probe_items(self.probe_size)
        try:
            self.spec.check_captions([it["caption"] for it in probe], pl_module.denoiser.tokenizer, "probe captions")
        except ValueError as e:
            raise ValueError(f"InformationMonitor: {e}") from None
        self._probe = probe
        self._where = self.measured_on(probe, pl_module.denoiser.tokenizer)
        self._records = run_dir(trainer) / MONITOR_RECORDS  # a broadcast under DDP: every rank asks

    def measured_on(self, probe: list[dict], tokenizer) -> dict[str, set]:
        """{tag: probe ids} of each quantity capped by ``mi_images`` / ``word_images``:
        the MI's first probe images, and each word's (pair's) first probe images that hold
        it (both words). Decided on the whole probe, so every rank measures the same images."""
        where = {}
        if self.mi_images is not None and self.spec.mi:
            where[mi_tag()] = {it["id"] for it in probe[:self.mi_images]}
        caps = self.word_images if isinstance(self.word_images, dict) else {}
        groups = [(cmi_tag(w), (w,), caps.get(w)) for w in self.spec.words] + [(pid_tag(*p), p, None)
                                                                                 for p in self.spec.pairs]
        for tag, words, cap in groups:
            cap = self.word_images if isinstance(self.word_images, int) else cap
            if cap is not None:
                holding = [it["id"] for it in probe if all(measurable(it["caption"], w, tokenizer) for w in words)]
                where[tag] = set(holding[:cap])
        return where

    #: The monitor's clock (seconds); a test replaces it on an instance with a fake one.
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def wall_seconds(self) -> float:
        """Wall time of this run so far: since fit start, plus earlier sessions when resumed."""
        if self._fit_start is None:
            return self._wall_before
        return self._wall_before + self.clock() - self._fit_start

    def time_share(self) -> float:
        """The monitor's cumulative share of the run's wall time so far (0 before any time passed)."""
        wall = self.wall_seconds()
        return self.monitor_seconds / wall if wall > 0 else 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = self.clock()
        self._check_probe_is_measurable(pl_module)
        self.monitor_seconds += self.clock() - self._fit_start
        if self.at_fit_start and trainer.global_step not in self.history:
            self.measure(trainer, pl_module)

    def _check_probe_is_measurable(self, pl_module) -> None:
        """A two-draw measurement of the first probe image with the model; raises ValueError if it fails."""
        # On the device, before training: a probe the model cannot take (wrong size,
        # channels, range) fails here, not after the first training steps.
        first = self._probe[0]
        dry = dataclasses.replace(self.spec, n_draws=2, maps=False, target_stderr=None, target_relative=None)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                measure_captions(pl_module.denoiser, first["image"][None], [first["id"]], [first["caption"]], dry)
        except Exception as e:
            raise ValueError(f"InformationMonitor: probe item {first['id']} (image {tuple(first['image'].shape)}) "
                             f"cannot be measured with this model: {type(e).__name__}: {e}") from e
        finally:
            pl_module.train(was_training)

    # ---- cadence ----------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # counts optimizer steps, so gradient accumulation is handled
        if step == 0 or step in self.history or step in self.skipped:
            return  # the later micro-batches of an accumulated step were decided at its first
        if self._is_final_step(trainer):
            # Here rather than in on_train_end, so the last checkpoint (saved after this hook)
            # holds the final measurement in its history.
            self.measure(trainer, pl_module)
        elif self.every_n_steps and step % self.every_n_steps == 0 and self._within_share(trainer):
            self.measure(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.at_validation_end and not trainer.sanity_checking and trainer.state.fn == "fit":
            if self._within_share(trainer):
                self.measure(trainer, pl_module, record=trainer.global_step not in self.history)

    def on_train_end(self, trainer, pl_module) -> None:
        # A run that ended before max_steps (max_epochs, early stopping, max_time) still gets
        # its final measurement; every rank reaches this hook with the same history.
        if self.max_time_share is not None and trainer.global_step not in self.history:
            self.measure(trainer, pl_module)

    def _is_final_step(self, trainer) -> bool:
        """Whether this step is the run's last by max_steps, and a final measurement is due
        (only with ``max_time_share``: the fixed cadence adds none)."""
        return self.max_time_share is not None and 0 < trainer.max_steps <= trainer.global_step

    def _within_share(self, trainer) -> bool:
        """Whether a measurement due now is taken: always without ``max_time_share`` and for
        the run's first measurement; else when, at the last measurement's cost, the monitor's
        cumulative share of wall time after it stays within ``max_time_share``.

        Every rank calls this at the same steps (the cadence is deterministic) and takes rank
        zero's answer: one broadcast, so the ranks never disagree on a collective."""
        if self.max_time_share is None:
            return True
        if self.last_seconds is None:
            take = True  # the first measurement: nothing to predict its cost from, and the run's "before"
        else:
            cost = self.last_seconds
            take = self.monitor_seconds + cost <= self.max_time_share * (self.wall_seconds() + cost)
        take = bool(trainer.strategy.broadcast(take, src=0))
        if not take:
            self.skipped.append(trainer.global_step)
        return take

    # ---- measurement -------------------------------------------------------------
    @torch.no_grad()
    def measure(self, trainer, pl_module, record: bool = True) -> dict:
        """Measure the probe now; returns the summary {tag: {"mean", "stderr", "images"}}.

        Its time, logging and figures included, is added to the monitor's and is the
        predicted cost of the next one. The logged share counts the measurement and the
        previous measurements' logging (this one's is still under way when it is logged)."""
        t0 = self.clock()
        summary, mmse, local_maps, alphas, on_ema = self._measure_probe(trainer, pl_module)
        self.monitor_seconds += self.clock() - t0
        t_log = self.clock()
        self._log(trainer, summary, mmse, local_maps, alphas, on_ema)
        self.monitor_seconds += self.clock() - t_log
        self.last_seconds = self.clock() - t0
        if record:
            self.history.append(trainer.global_step)
        return summary

    def _measure_probe(self, trainer, pl_module) -> tuple:
        """This rank's share of the probe, measured and reduced over ranks (in eval mode):
        (summary, MMSE curves or None, this rank's maps {word: (image, map, title)}, MMSE alphas, on_ema)."""
        rank, world = trainer.global_rank, trainer.world_size
        local = self._probe[rank::world]
        was_training = pl_module.training
        pl_module.eval()
        try:
            with pl_module.ema_weights(self.use_ema) as on_ema:
                denoiser = pl_module.denoiser
                metrics = CaptionMetrics(self.spec).to(pl_module.device)
                curve = InformationMap((2, self.mmse_points)).to(pl_module.device) if self.mmse_points else None
                alphas = None
                if curve is not None:
                    alphas = torch.linspace(*default_sampler(denoiser).range, self.mmse_points, dtype=torch.float64)
                local_maps = {}
                if local:
                    local_maps = self._measure_local(denoiser, local, metrics, curve, alphas)
                summary = metrics.compute()  # collectives: every rank, same order
                mmse = curve.compute() if curve is not None else None
        finally:
            pl_module.train(was_training)
        return summary, mmse, local_maps, alphas, bool(on_ema)

    def _measure_local(self, denoiser, items, metrics, curve, alphas) -> dict:
        local_maps = {}
        measured = [it for it in items if self._measures_something(it["id"])]
        if measured:
            ids, captions = [it["id"] for it in measured], [it["caption"] for it in measured]
            images = torch.stack([it["image"] for it in measured])
            # Draws keyed by (seed, probe id), never by step or rank: fixed for the whole run.
            where = {tag: [i in on for i in ids] for tag, on in self._where.items()}
            res = measure_captions(denoiser, images, ids, captions, self.spec, where)
            metrics.update(res, ids)
            for w, est in res.cmi.items():
                has = res.present[w]
                if est.map is not None and bool(has.any()):
                    k = int(has.nonzero()[0])
                    title = (f"cmi/{w} = {float(est.value[k]):.3f} +- {float(est.stderr[k]):.3f} nats "
                             f"(probe image {ids[k]})")
                    local_maps[w] = (measured[k]["image"], est.map[k], title)
        if curve is not None:
            # the first mmse_images of the whole probe, wherever their rank measures them
            first = {it["id"] for it in self._probe[:self.mmse_images]}
            rows = [it for it in items if it["id"] in first]
            if rows:
                x = denoiser.encode(torch.stack([it["image"] for it in rows]), ids=[it["id"] for it in rows])
                curve.update(self.mmse_per_image(denoiser, x, rows, alphas))
        return local_maps

    def _measures_something(self, probe_id) -> bool:
        """Whether any quantity is measured on this probe image: one not restricted by
        ``mi_images`` / ``word_images`` (measured on every image), or one whose first
        images include it. An image that measures nothing costs nothing (not even its caption)."""
        return len(self._where) < len(self.spec.tags) or any(probe_id in on for on in self._where.values())

    def mmse_per_image(self, denoiser, x, items, alphas) -> torch.Tensor:
        """(N, 2, G) MMSE curves of the null and full caption of each probe item.

        Each item's eps are keyed by (seed + MMSE_SEED_OFFSET, its id), so an item's curve
        is the same whichever rank measures it and whatever items share its batch."""
        eps = mmse_eps_for_ids([it["id"] for it in items], len(alphas), self.mmse_eps, tuple(x.shape[1:]),
                               self.spec.seed + MMSE_SEED_OFFSET)
        columns = [denoiser.null_conditions(len(items)), [it["caption"] for it in items]]
        return mmse_curve(denoiser, x, columns, alphas, eps=eps, microbatch=self.spec.microbatch).per_image

    def _log(self, trainer, summary, mmse, local_maps, alphas, on_ema: bool) -> None:
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        values = scalars(summary)  # stderrs as computed: one image has its own Monte-Carlo error
        values["info/monitor/time_share"] = self.time_share()
        values["info/monitor/ema"] = 1.0 if on_ema else 0.0
        log_scalars(trainer, values, step)
        if self._records is not None:
            self._records.parent.mkdir(parents=True, exist_ok=True)
            with open(self._records, "a") as f:  # the curves as data, beside the TensorBoard events
                f.write(json_line({"step": step, "ema": on_ema, "summary": summary}))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                exp = logger.experiment
                for w, (image, heat, title) in local_maps.items():
                    exp.add_figure(f"info/maps/{w}", map_figure(image, heat, f"{title}, step {step}"), global_step=step)
                if mmse is not None:
                    fig = mmse_figure(alphas, mmse, ["null prompt", "caption"],
                                      title=f"step {step}" + (" (EMA weights)" if on_ema else ""))
                    exp.add_figure("info/mmse", fig, global_step=step)

    # ---- checkpointing -------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": list(self.history), "skipped": list(self.skipped), "monitor_seconds": self.monitor_seconds,
                "wall_seconds": self.wall_seconds(), "last_seconds": self.last_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self.skipped = list(state_dict.get("skipped", []))
        self.last_seconds = state_dict.get("last_seconds")
        if "wall_seconds" in state_dict:
            self.monitor_seconds = float(state_dict["monitor_seconds"])
            self._wall_before = float(state_dict["wall_seconds"])
        else:
            # A checkpoint from before the wall time was saved: its monitor seconds have no
            # wall time to be a share of, so the accounting starts afresh with this session.
            self.monitor_seconds, self._wall_before = 0.0, 0.0
