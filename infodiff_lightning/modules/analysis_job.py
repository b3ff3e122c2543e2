"""What every analysis job shares: per-sample records, resume, failures, status, report.

A job is a LightningModule run by ``trainer.test`` (analyze.py). Its run folder holds

    per_image.rank<k>.jsonl   one record per measured sample, appended batch by batch
    failures.rank<k>.jsonl    one record per failed sample: id and reason
    status.json               "running" while it runs (or was killed); "complete",
                              "complete_with_failures" or "stopped" (fail_fast)
    summary.json              dataset-level results, "status" and "samples" counts
    report.md                 the headline table in markdown
    config.yaml               the resolved config (written by the CLI)

**Resume.** Records are appended one batch per write, so a killed job leaves whole
records (a torn last line is cut off when the job starts again). Started again in the
same folder, a job reads every rank's records, feeds them back into its metrics and
measures only the samples without one; failed samples are tried again. The metrics
reduce per-sample values in the order of sample ids, so the resumed summary is the
uninterrupted one, bit for bit, on any number of processes.

**Failures.** A sample the data module could not read (its ``"error"`` is set) or a
batch whose measurement raised is recorded with the reason, and the job goes on; with
``fail_fast`` the first failure stops the job. The summary, the report and the console
say "N of M samples failed", and analyze.py exits with :data:`EXIT_SAMPLE_FAILURES`.

**Records.** A job declares its per-sample record as a :class:`~.records.Schema`
(``self.schema``) and implements :meth:`measure_samples` (one batch of good samples ->
one dict of field values per sample) and :meth:`update_metrics` (records -> metrics).
The records written, the replay on resume and the metric updates are derived from the
schema here: the metrics read the records in the measured and the resumed path alike.
Subclasses also implement :meth:`results` (a collective) and :meth:`report_lines`.
"""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import Metric

from ..io import json_line, read_records, run_dir, write_json_atomic
from .records import Schema

__all__ = ["AnalysisJob", "SampleFailure", "EXIT_SAMPLE_FAILURES", "read_records", "torch_dtype_of"]

#: analyze.py's exit status when every result was written but some samples failed.
EXIT_SAMPLE_FAILURES = 3


class SampleFailure(RuntimeError):
    """Raised with ``fail_fast`` at the first failed sample."""


class SampleCounts(Metric):
    """Samples measured now, taken from earlier records, and failed (sums over ranks)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("measured", "resumed", "failed"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, measured: int = 0, resumed: int = 0, failed: int = 0) -> None:
        self.measured += measured
        self.resumed += resumed
        self.failed += failed

    def compute(self) -> dict[str, int]:
        m, r, f = int(self.measured), int(self.resumed), int(self.failed)
        return {"total": m + r + f, "measured": m, "resumed": r, "failed": f}


def torch_dtype_of(name: str | None) -> torch.dtype | None:
    """The torch dtype a job's ``torch_dtype`` option names (None: the model's own)."""
    if not name:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"torch_dtype must name a torch dtype (float32, float16, bfloat16), got {name!r}")
    return dtype


def _cut_torn_line(path: Path) -> None:
    """Truncate a JSONL file after its last newline (a killed write can leave half a line)."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


class AnalysisJob(L.LightningModule):
    """Base of the analysis jobs (see the module doc).

    Args:
        fail_fast: stop at the first failed sample instead of recording it and going on.
    """

    #: The per-sample record (see records.py).
    schema: Schema | None = None

    def __init__(self, fail_fast: bool = False):
        super().__init__()
        self.fail_fast = fail_fast
        self.counts = SampleCounts()
        self.summary: dict | None = None  # after the test loop: what summary.json holds
        self.failed_samples = 0

    # ---- what a job implements --------------------------------------------------
    def batch_items(self, batch) -> tuple[list[int], list[str]]:
        """(sample ids, error per sample: "" for a good one) of a batch."""
        return [int(i) for i in batch["id"]], [str(e) for e in batch["error"]]

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        """Measure the samples at positions ``keep`` of ``batch`` (their ids: ``ids``): one
        dict per sample with its "id" and the values of the schema's fields."""
        raise NotImplementedError

    def update_metrics(self, records: list[dict]) -> None:
        """Add records (as :meth:`~.records.Schema.read` gives them, in id order) to the metrics."""
        raise NotImplementedError

    def measure(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        """The records of the samples at ``keep`` (in id order), the metrics updated from them."""
        records = sorted((self.schema.write(s) for s in self.measure_samples(batch, keep, ids)), key=lambda r: r["id"])
        self.update_metrics([self.schema.read(r) for r in records])
        return records

    def replay(self, records: list[dict]) -> None:
        """Feed saved records (from an earlier, interrupted run) into the metrics."""
        self.update_metrics([self.schema.read(r) for r in records])

    def results(self) -> dict:
        """The dataset-level results (a collective: every rank calls it)."""
        raise NotImplementedError

    def report_lines(self, results: dict) -> list[str]:
        """The headline table (markdown lines) of the results."""
        raise NotImplementedError

    # ---- the shared loop ----------------------------------------------------------
    def on_test_start(self) -> None:
        self._out = run_dir(self.trainer)  # a broadcast: every rank asks
        out, rank = Path(self._out), self.trainer.global_rank
        if self.trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("failures.rank*.jsonl"):  # failed samples are tried again
                old.unlink()
            write_json_atomic(out / "status.json", {"status": "running"})
        self.trainer.strategy.barrier()
        _cut_torn_line(out / f"per_image.rank{rank}.jsonl")
        self.trainer.strategy.barrier()
        done = {int(r["id"]): r for r in read_records(out, "per_image")}
        self._done = set(done)
        if self.trainer.is_global_zero and done:  # one rank feeds them back: each is counted once
            self.replay(sorted(done.values(), key=lambda r: r["id"]))
            self.counts.update(resumed=len(done))
            rank_zero_info(f"resuming {out}: {len(done)} samples already measured")

    def test_step(self, batch, batch_idx: int) -> None:
        ids, errors = self.batch_items(batch)
        bad = [(i, e) for i, e in zip(ids, errors) if e]
        keep = [k for k, (i, e) in enumerate(zip(ids, errors)) if not e and i not in self._done]
        if bad:
            self._fail([{"id": i, "error": e} for i, e in bad])
        if not keep:
            return
        kept_ids = [ids[k] for k in keep]
        try:
            records = self.measure(batch, keep, kept_ids)
        except Exception as e:  # record and go on: one bad batch must not lose the job
            self._fail([{"id": i, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=3)}
                        for i in kept_ids], cause=e)
            return
        self._append("per_image", records)
        self.counts.update(measured=len(records))

    def _fail(self, records: list[dict], cause: Exception | None = None) -> None:
        if self.fail_fast:
            records = records[:1]  # the first failure stops the job
        self._append("failures", records)
        self.counts.update(failed=len(records))
        if self.fail_fast:
            first = records[0]
            message = (f"sample {first['id']} failed: {first['error']} (fail_fast is set; "
                       f"see {Path(self._out) / f'failures.rank{self.trainer.global_rank}.jsonl'})")
            if self.trainer.is_global_zero:
                write_json_atomic(Path(self._out) / "status.json", {"status": "stopped", "reason": message})
            raise SampleFailure(message) from cause

    def _append(self, stem: str, records: list[dict]) -> None:
        path = Path(self._out) / f"{stem}.rank{self.trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write per batch: a kill leaves whole records or a torn last line, never a mix.
        with open(path, "a") as f:
            f.write("".join(json_line(r) for r in records))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(path, 0o644)

    def on_test_epoch_end(self) -> None:
        results = self.results()  # collectives: every rank, same order
        counts = self.counts.compute()
        self.failed_samples = counts["failed"]
        status = "complete_with_failures" if counts["failed"] else "complete"
        self.summary = {"status": status, "samples": counts, **results}
        if not self.trainer.is_global_zero:
            return
        out = Path(self._out)
        write_json_atomic(out / "summary.json", self.summary)
        failed_line = (f"{counts['failed']} of {counts['total']} samples failed; see {out}/failures.rank*.jsonl"
                       if counts["failed"] else f"all {counts['total']} samples measured")
        lines = self.report_lines(results)
        report = [f"# {type(self).__name__}", "", f"Status: **{status}**. {failed_line}.", ""] + lines
        figures = sorted((out / "figures").glob("*.png"))
        if figures:  # what save_figure kept, this run and any run it resumed
            report += ["", "## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures]
        (out / "report.md").write_text("\n".join(report) + "\n")
        os.chmod(out / "report.md", 0o644)
        write_json_atomic(out / "status.json", {"status": status, "samples": counts})
        rank_zero_info("\n" + "\n".join(lines) + f"\n{failed_line}\nresults in {out}")

    def save_figure(self, fig, name: str, tag: str) -> None:
        """Keep a figure of this run: ``figures/<name>.png`` in the run folder (linked from the
        report) and the TensorBoard image ``tag``. Rank zero writes; every rank closes it."""
        import matplotlib.pyplot as plt

        if self.trainer.is_global_zero:
            folder = Path(self._out) / "figures"
            folder.mkdir(parents=True, exist_ok=True)
            fig.savefig(folder / f"{name}.png")
            if isinstance(self.logger, TensorBoardLogger):
                self.logger.experiment.add_figure(tag, fig, 0, close=False)
        plt.close(fig)

    def validate(self, datamodule: Any) -> None:
        """Check the whole job before any sample is computed (analyze.py calls it); raise a
        ValueError naming the option and the value that is wrong. Nothing by default."""

