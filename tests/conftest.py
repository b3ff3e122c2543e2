import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
