"""gbair_nb.config: quick mode and setup() change only what they are asked to; quiet_transformers() restores."""
import os

import pytest
from transformers.utils import logging as hf_logging

from gbair_nb.config import quick_mode, quiet_transformers, setup

HF_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def loud_transformers(monkeypatch):
    """transformers at INFO with progress bars on, no offline variables; everything put back afterwards."""
    for var in HF_VARS + ("TOKENIZERS_PARALLELISM",):
        monkeypatch.delenv(var, raising=False)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


def test_setup_with_no_arguments_changes_nothing(loud_transformers, monkeypatch):
    monkeypatch.setenv("GBAIR_QUICK", "1")
    before = dict(os.environ)
    env = setup()
    assert dict(os.environ) == before  # no HF_HUB_OFFLINE: a student's own from_pretrained still downloads
    assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
    assert env["quick"] is True and env["threads"] >= 1


def test_setup_does_what_it_is_asked(loud_transformers, monkeypatch):
    monkeypatch.setenv("GBAIR_QUICK", "1")
    setup(offline=True, quiet=True, quick=False)
    assert all(os.environ[v] == "1" for v in HF_VARS) and os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
    assert quick_mode() is False


def test_quiet_transformers_restores_the_state_it_found(loud_transformers):
    with quiet_transformers():
        assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    with pytest.raises(RuntimeError), quiet_transformers():
        raise RuntimeError("a failed load")
    assert hf_logging.get_verbosity() == hf_logging.WARNING and not hf_logging.is_progress_bar_enabled()


def test_gbair_device_picks_the_device_and_refuses_what_cannot_be(monkeypatch):
    import torch

    from gbair_nb.config import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    monkeypatch.delenv("GBAIR_DEVICE", raising=False)
    assert device() == "cuda"
    monkeypatch.setenv("GBAIR_DEVICE", "cpu")
    assert device() == "cpu"
    monkeypatch.setenv("GBAIR_DEVICE", "gpu")
    with pytest.raises(ValueError, match="GBAIR_DEVICE='gpu': use 'cpu' or 'cuda'"):
        device()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("GBAIR_DEVICE", "cuda")
    with pytest.raises(ValueError, match="torch sees no GPU"):
        device()
    monkeypatch.delenv("GBAIR_DEVICE")
    assert device() == "cpu"
