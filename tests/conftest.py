import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Under pytest-xdist (make test runs one worker per core) each worker gets its share of
# the cores: two workers at two threads each would oversubscribe a 2-core machine.
# The scripts the tests start in subprocesses inherit the share through OMP_NUM_THREADS.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, os.cpu_count() or 1) // _workers)
torch.set_num_threads(_threads)
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))


@pytest.fixture
def gen():
    """A fresh seeded generator: every test repeats exactly."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread. Tiny models and small tensors gain nothing from a
    second thread, and its synchronisation costs 50-100x when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Files that hold a test marked ``slow`` run first. Under pytest-xdist a file stays on
    one worker; a long file left to the end would run alone while the other cores idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the rest keep their order
