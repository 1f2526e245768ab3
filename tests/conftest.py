"""pytest configuration shared by the test modules."""

import pytest
import torch

# run as a script by test_gate_ddp.py (it puts tests/ on sys.path): not a module to collect
collect_ignore = ["helpers_gate_ddp.py"]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread per test process: the models are tiny, and on a busy 2-core machine torch's
    spinning worker threads made single ops 20000x slower (118 ms vs 6 us for one index_add_)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
