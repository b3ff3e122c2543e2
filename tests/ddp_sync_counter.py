"""Run analyze.py while counting synchronisations (used by test_ddp_coverage.py).

Counts, per rank, the torchmetrics state synchronisations (``Metric._sync_dist``, one per
metric compute under DDP) and the ``torch.distributed.all_reduce`` calls (what
``LightningModule.log(..., sync_dist=True)`` costs per logged value), and writes them to
``$SYNC_COUNT_DIR/rank<k>.json`` when the job ends. Lightning re-launches this script
for rank 1, so both ranks are counted.
"""
import atexit
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from torchmetrics import Metric

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

counts = {"metric_syncs": [], "all_reduce": 0, "all_reduce_callers": []}
_sync_dist, _all_reduce = Metric._sync_dist, dist.all_reduce


def counting_sync_dist(self, *args, **kwargs):
    counts["metric_syncs"].append(type(self).__name__)
    return _sync_dist(self, *args, **kwargs)


def counting_all_reduce(*args, **kwargs):
    counts["all_reduce"] += 1
    import traceback

    counts["all_reduce_callers"].append([f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}"
                                         for f in traceback.extract_stack()[-8:-1]])
    return _all_reduce(*args, **kwargs)


Metric._sync_dist = counting_sync_dist
dist.all_reduce = counting_all_reduce


@atexit.register
def write_counts() -> None:
    rank = os.environ.get("LOCAL_RANK", "0")
    out = Path(os.environ["SYNC_COUNT_DIR"]) / f"rank{rank}.json"
    out.write_text(json.dumps(counts))


if __name__ == "__main__":
    import analyze

    sys.exit(analyze.main(sys.argv[1:]))
