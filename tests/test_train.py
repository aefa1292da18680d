"""gbair_nb.train on the tiny random backbone: learning, checkpoints with learning rates, fingerprints, repeatability."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from gbair_nb.pet import head_names, trainable_names
from gbair_nb.checkpoints import read_checkpoint
from gbair_nb.train import FingerprintError, TrainConfig, _schedule, evaluate, train
from gbair_nb.runs import load_run

CONFIG = dict(backbone="tiny", epochs=4, batch_size=8, lr=5e-2, lr_head=5e-2, max_length=24,
              method_options={"num_virtual_tokens": 4}, seed=0)


@pytest.fixture(scope="module")
def trained(small_sms, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_a")
    run = train(small_sms, val=small_sms, config=TrainConfig(**CONFIG), out_dir=out, verbose=False)
    return run, out


def test_loss_goes_down(trained):
    run, _ = trained
    losses = [e["train_loss"] for e in run.record["epochs"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.05, losses
    assert all("val_accuracy" in e and "val_macro_f1" in e for e in run.record["epochs"])


def test_checkpoints_and_learning_rates_are_saved(trained):
    run, out = trained
    assert [c.epoch for c in run.checkpoints] == [1, 2, 3, 4]  # one per epoch by default
    assert [c.step for c in run.checkpoints] == [8, 16, 24, 32]  # 64 examples / batch 8
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert files == [f"ckpt_{i:02d}.safetensors" for i in range(4)]
    assert (out / "run.json").exists() and (out / "timing.json").exists()
    heads = set(head_names(run.model))
    for c in run.checkpoints:
        blob = read_checkpoint(c.path)
        assert list(blob["state"]) == trainable_names(run.model)  # trainable tensors only
        assert set(c.lrs) == set(trainable_names(run.model))  # a rate per parameter name
        assert blob["lrs"] == c.lrs and blob["fingerprint"] == small_fp(run)
        for name, lr in c.lrs.items():
            peak = CONFIG["lr_head"] if name in heads else CONFIG["lr"]
            assert 0.1 * peak - 1e-12 <= lr <= peak
    # linear decay to 10% of the peak (not to 0): the last checkpoint keeps a weight in TracIn
    total = 32
    factor = _schedule(total, 0.06, 0.1)
    assert factor(total) == pytest.approx(0.1) and factor(total - 1) > 0.1
    assert run.checkpoints[-1].lr == pytest.approx(CONFIG["lr"] * factor(total - 1))
    assert run.checkpoints[-1].lr < run.checkpoints[0].lr


def small_fp(run):
    return run.record["data"]["fingerprint"]


def test_load_run_refuses_other_data(trained, small_sms):
    run, out = trained
    again = load_run(out, small_sms)  # the same data: fine, last checkpoint loaded
    assert np.allclose(again.predict_proba(small_sms.texts[:8]), run.predict_proba(small_sms.texts[:8]), atol=1e-6)
    flipped = small_sms.with_labels(1 - small_sms.labels)
    with pytest.raises(FingerprintError, match="fingerprint"):
        load_run(out, flipped)
    with pytest.raises(FileNotFoundError, match="no run.json"):
        load_run(out / "nowhere")


def test_same_seed_same_run(small_sms, trained, tmp_path):
    _, out_a = trained
    train(small_sms, val=small_sms, config=TrainConfig(**CONFIG), out_dir=tmp_path, verbose=False)
    assert (tmp_path / "run.json").read_text() == (out_a / "run.json").read_text()
    for i in range(4):
        a = read_checkpoint(out_a / "checkpoints" / f"ckpt_{i:02d}.safetensors")
        b = read_checkpoint(tmp_path / "checkpoints" / f"ckpt_{i:02d}.safetensors")
        assert a["lrs"] == b["lrs"]
        assert all(torch.equal(a["state"][n], b["state"][n]) for n in a["state"])  # bitwise
    other = train(small_sms, config=TrainConfig(**{**CONFIG, "seed": 1, "epochs": 1}), verbose=False)
    first = trainable_names(other.model)[0]
    assert not torch.equal(other.checkpoints[0].state[first],
                           read_checkpoint(out_a / "checkpoints" / "ckpt_00.safetensors")["state"][first])


def test_evaluate_matches_a_hand_computation(trained, small_sms):
    run, _ = trained
    m = evaluate(run, small_sms)
    assert m.probs.shape == (64, 2) and np.allclose(m.probs.sum(1), 1, atol=1e-5)
    preds = m.probs.argmax(1)
    y = small_sms.labels
    assert np.array_equal(m.preds, preds) and m.accuracy == pytest.approx((preds == y).mean())
    f1s = []
    for c in range(2):
        tp, fp, fn = ((preds == c) & (y == c)).sum(), ((preds == c) & (y != c)).sum(), ((preds != c) & (y == c)).sum()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert m.macro_f1 == pytest.approx(np.mean(f1s))
    assert list(m.report.index[:2]) == ["ham", "spam"]
    assert m.report.loc["spam", "support"] == 32 and m.report.loc["spam", "f1-score"] == pytest.approx(f1s[1])
    assert run.record["epochs"][-1]["val_accuracy"] == pytest.approx(m.accuracy)


def test_run_record_is_plain_json(trained):
    _, out = trained
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["backbone"] == "tiny" and record["trainable_params"] == 4 * 32 + 66
    assert record["data"]["class_counts"] == [32, 32] and len(record["checkpoints"]) == 4


def test_for_method_gives_each_method_its_rate_and_keeps_the_defaults():
    from gbair_nb.train import METHOD_DEFAULTS, TrainConfig

    assert TrainConfig.for_method("prompt_tuning", quick=False) == TrainConfig()
    assert TrainConfig.for_method("prompt_tuning", quick=True) == TrainConfig.quick()
    for method in ["lora", "gift", "full", "head_only"]:
        for quick in (False, True):
            c = TrainConfig.for_method(method, quick=quick, seed=3)
            assert c.method == method and c.lr == METHOD_DEFAULTS[method]["lr"] and c.seed == 3
            assert c.method_options == METHOD_DEFAULTS[method]["method_options"]
            assert c.epochs == (TrainConfig.quick().epochs if quick else TrainConfig().epochs)


# ------------------------------------------------------------------------------------ old and new run records
def test_from_record_reads_todays_record_back(trained):
    run, _ = trained
    assert TrainConfig.from_record(run.record["config"]) == run.config


def test_from_record_fills_a_field_added_later_with_the_behaviour_before_it():
    old = asdict(TrainConfig(**CONFIG))
    del old["gmt"]  # records written before gradient-mask tuning existed: no masking
    assert TrainConfig.from_record(old).gmt is None


def test_from_record_refuses_what_it_cannot_honour():
    record = asdict(TrainConfig(**CONFIG))
    with pytest.raises(ValueError, match="'lr'.*retrain"):  # every record has it: the default would be a guess
        TrainConfig.from_record({k: v for k, v in record.items() if k != "lr"})
    with pytest.raises(ValueError, match="'frobnicate'.*3"):
        TrainConfig.from_record({**record, "frobnicate": 3})
    with pytest.raises(ValueError, match="'epochs'.*'four'"):
        TrainConfig.from_record({**record, "epochs": "four"})
    with pytest.raises(ValueError, match="a JSON object"):
        TrainConfig.from_record([record])


def test_from_record_drops_an_unknown_switch_that_is_off():
    record = asdict(TrainConfig(**CONFIG))
    with pytest.warns(UserWarning, match="'new_switch'"):
        config = TrainConfig.from_record({**record, "new_switch": None})
    assert config == TrainConfig(**CONFIG)
