"""Shared test setup: offline, one thread per worker, headless plots, quick mode; no run may collect zero tests."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GBAIR_QUICK", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

from gbair_nb.data import load_dataset  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    # pytest's exit code 5 ("no tests collected") must never read as a pass in CI
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def sms():
    """The built-in SMS spam dataset (read once per worker)."""
    return load_dataset("sms_spam")


@pytest.fixture(scope="session")
def small_sms(sms):
    """64 balanced SMS (32 ham, 32 spam): enough for a tiny model to learn something in a second."""
    import numpy as np

    rng = np.random.default_rng(0)
    pos = np.concatenate([rng.choice(np.flatnonzero(sms.labels == c), 32, replace=False) for c in (0, 1)])
    return sms.subset(np.sort(pos))
