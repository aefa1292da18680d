"""Random-projection TracIn: the map itself (an oracle dense matrix, the variance we state), the scores against
exact TracIn within that bound, seeds, memory that does not grow with the training set, and the CLI options."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from gbair_nb import projection as projection_module
from gbair_nb.influence import (InfluenceError, aggregated_influence, lr_vector, per_example_grads, self_influence,
                                top_influences, tracin)
from gbair_nb.pet import trainable_state
from gbair_nb.models import make_model
from gbair_nb.projection import KINDS, Projection, distortion_bound
from test_influence import TEST, TEST_LABELS, TRAIN, TRAIN_LABELS, _perturbed_checkpoints, _sensitive

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="module")
def pt():
    model, tok = make_model(backbone="tiny", num_virtual_tokens=4)
    return _sensitive(model), tok


@pytest.fixture(scope="module")
def ckpts(pt):
    names = list(trainable_state(pt[0]))
    lrs = [{n: (0.05 if "prompt" in n else 0.01) * f for n in names} for f in (1.0, 0.55, 0.1)]
    return _perturbed_checkpoints(pt[0], lrs)


@pytest.fixture(scope="module")
def weighted(pt, ckpts):
    """Per checkpoint: (√lrs ⊙ g_test, √lrs ⊙ g_train) in float64, the vectors whose dot products TracIn sums."""
    model, tok = pt
    out = []
    for state, lrs in ckpts:
        g_tr, sl = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, state=state, verbose=False)
        g_te, _ = per_example_grads(model, tok, TEST, TEST_LABELS, state=state, verbose=False)
        root = lr_vector(sl, lrs).sqrt().double()
        out.append((g_te.double() * root, g_tr.double() * root))
    return out


def _normalised_errors(approx: np.ndarray, weighted) -> np.ndarray:
    """(C, n_test, n_train) errors of per-checkpoint projected scores in units of ‖a‖‖b‖ (the bound's unit)."""
    errs = []
    for c, (a, b) in enumerate(weighted):
        exact = (a @ b.T).numpy()
        scale = np.outer(a.norm(dim=1).numpy(), b.norm(dim=1).numpy())
        errs.append((approx[c] - exact) / scale)
    return np.stack(errs)


# ---------------------------------------------------------------------------------------------- the map itself
@pytest.mark.parametrize("kind", KINDS)
def test_projection_equals_its_dense_matrix(kind):
    g = torch.randn(7, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    proj = Projection(1000, 48, seed=5, kind=kind)
    S = proj.matrix().double()
    assert S.shape == (1000, 48) and S.abs().sum() > 0
    assert torch.allclose(proj(g), g @ S, rtol=0, atol=1e-12)
    scale = torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(proj(g, scale=scale), (g * scale) @ S, rtol=0, atol=1e-12)
    # same map whatever the batch of rows: chunks of a training set see the same S. Not bitwise: on an AMD EPYC
    # (AVX-512) MKL multiplies 3 rows and 7 rows with different kernels and the sums differ by ~6e-15; another S
    # would differ by O(1)
    assert torch.allclose(torch.cat([proj(g[:3]), proj(g[3:])]), proj(g), rtol=0, atol=1e-12)
    # float32 gradients are projected by the same matrix (generated in float32 and cast)
    assert torch.allclose(proj(g.float()).double(), g.float().double() @ S, atol=1e-5)


def test_rows_are_unit_norm_where_the_variance_formula_says_so():
    for kind in ("rademacher", "countsketch"):
        S = Projection(300, 16, seed=1, kind=kind).matrix()
        assert torch.allclose(S.norm(dim=1), torch.ones(300))
    S = Projection(300, 16, seed=1, kind="countsketch").matrix()  # exactly one signed 1 per row
    assert ((S != 0).sum(1) == 1).all() and set(S[S != 0].tolist()) == {-1.0, 1.0}
    S = Projection(300, 16, seed=1, kind="gaussian").matrix()  # ‖s_i‖² only 1 on average: mean 1, variance 2/d
    assert abs(float((S.norm(dim=1) ** 2).mean()) - 1) < 4 * np.sqrt(2 / 16 / 300)


@pytest.mark.parametrize("kind", KINDS)
def test_unbiased_with_the_stated_variance(kind):
    """Over many seeds, ⟨xS, yS⟩ averages to ⟨x, y⟩ and its variance is the module docstring's formula."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 40, generator=gen, dtype=torch.float64)
    y = 0.6 * x + torch.randn(1, 40, generator=gen, dtype=torch.float64)
    d, K = 8, 600
    est = np.array([float(Projection(40, d, seed=s, kind=kind)(x) @ Projection(40, d, seed=s, kind=kind)(y).T)
                    for s in range(K)])
    xx, yy, xy = float(x @ x.T), float(y @ y.T), float(x @ y.T)
    var = (xx * yy + xy ** 2 - (0 if kind == "gaussian" else 2 * float((x ** 2 * y ** 2).sum()))) / d
    assert var <= distortion_bound(d) ** 2 * xx * yy
    assert abs(est.mean() - xy) <= 4 * np.sqrt(var / K)
    assert 0.8 <= est.var(ddof=1) / var <= 1.25  # sd of the sample variance ≈ var·√(2/K) ≈ 0.06 var


def test_countsketch_blocks_are_compact():
    buckets, signs = Projection(300_000, 32, seed=4).block(0)
    assert buckets.dtype == torch.int32 and signs.dtype == torch.int8 and set(signs.tolist()) == {-1, 1}
    assert 0 <= int(buckets.min()) and int(buckets.max()) == 31


def test_blocks_are_bounded_and_regenerated_identically():
    dense = Projection(10_000, 1024, seed=2, kind="rademacher")
    assert dense.block_rows * dense.dim <= projection_module.DENSE_BLOCK_ELEMENTS and dense.n_blocks == 3
    assert torch.equal(dense.block(1), dense.block(1))
    assert not torch.equal(dense.block(0)[:100], dense.block(1)[:100])
    assert not torch.equal(dense.block(0), Projection(10_000, 1024, seed=2, stream=1, kind="rademacher").block(0))
    sketch = Projection(200_000, 64, seed=2)
    assert sketch.n_blocks == 4 and all(len(sketch.block(b)[0]) <= sketch.block_rows for b in range(4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_params=0, dim=4), "n_params=0"), (dict(n_params=10, dim=0), "dim=0"),
    (dict(n_params=10, dim=4, seed=-1), "seed=-1"), (dict(n_params=10, dim=4, seed=1.5), "seed=1.5"),
    (dict(n_params=10, dim=4, kind="sparse"), "kind='sparse'"),
])
def test_projection_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Projection(**kwargs)


def test_projection_checks_shapes_and_refuses_a_huge_dense_matrix():
    proj = Projection(10, 4)
    with pytest.raises(ValueError, match=r"\(n, 10\)"):
        proj(torch.zeros(3, 11))
    with pytest.raises(ValueError, match="scale must have shape"):
        proj(torch.zeros(3, 10), scale=torch.ones(9))
    with pytest.raises(ValueError, match="block by block"):
        Projection(10**6, 1024).matrix()


# ----------------------------------------------------------------------------------------- TracIn, projected
@pytest.mark.parametrize("kind", KINDS)
def test_projected_tracin_is_the_dense_oracle(pt, ckpts, weighted, kind):
    """project=d is exactly Σ_c ((√lrs ⊙ g_test) S_c)·((√lrs ⊙ g_train) S_c), S_c the stream-c matrix."""
    model, tok = pt
    d = 24
    got = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, project=d, project_seed=9,
                 project_kind=kind, per_checkpoint=True, verbose=False)
    for c, (a, b) in enumerate(weighted):
        S = Projection(a.shape[1], d, seed=9, stream=c, kind=kind).matrix().double()
        want = ((a @ S) @ (b @ S).T).numpy()
        assert np.abs(got[c] - want).max() <= 1e-5 * np.abs(want).max()


def test_large_d_reproduces_exact_within_the_jl_bound(pt, ckpts, weighted):
    """d = 4096 ≥ P = 194: every pair within 5 standard deviations of the bound, the RMS within 1.5."""
    model, tok = pt
    P = weighted[0][0].shape[1]
    for kind in KINDS:
        d = 4096
        assert d >= P
        got = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, project=d, project_kind=kind,
                     per_checkpoint=True, verbose=False)
        e = _normalised_errors(got, weighted)
        bound = distortion_bound(d)  # 0.022
        assert np.abs(e).max() <= 5 * bound, kind
        assert np.sqrt((e ** 2).mean()) <= 1.5 * bound, kind


def test_error_shrinks_as_d_grows(pt, ckpts, weighted):
    model, tok = pt
    for kind in ("countsketch", "gaussian"):
        rms = []
        for d in (8, 32, 128, 512):
            got = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, project=d, project_kind=kind,
                         per_checkpoint=True, verbose=False)
            e = _normalised_errors(got, weighted)
            rms.append(float(np.sqrt((e ** 2).mean())))
            assert rms[-1] <= 1.5 * distortion_bound(d), (kind, d, rms)
        assert all(a > b for a, b in zip(rms, rms[1:])), (kind, rms)
        assert rms[0] / rms[-1] >= 4, (kind, rms)  # √(512/8) = 8 expected


def test_fixed_seed_same_scores_other_seed_other_scores(pt, ckpts):
    model, tok = pt
    run = lambda **kw: self_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, project=16, verbose=False, **kw)
    a, b = run(project_seed=4), run(project_seed=4)
    assert np.array_equal(a, b)
    assert not np.allclose(a, run(project_seed=5), rtol=1e-3)
    assert not np.allclose(a, run(project_seed=4, project_kind="gaussian"), rtol=1e-3)


def test_projected_scores_are_one_consistent_estimate(pt, ckpts):
    """Self-influence = the diagonal of projected TracIn; aggregated = its row sum; 'last' = the last checkpoint
    of 'all' (a checkpoint's map is fixed by its position); top_influences reports those same scores."""
    model, tok = pt
    opts = dict(project=32, project_seed=1, verbose=False)
    m = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TRAIN, TRAIN_LABELS, per_checkpoint=True, **opts)
    si = self_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, **opts)
    assert np.allclose(si, np.einsum("cii->i", m), rtol=1e-5, atol=1e-7)
    on = [0, 3, 5]
    agg = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, [TRAIN[i] for i in on], TRAIN_LABELS[on],
                               **opts)
    assert np.allclose(agg, m.sum(0)[on].sum(0), rtol=1e-5, atol=1e-7)
    last = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TRAIN, TRAIN_LABELS, checkpoints_used="last", **opts)
    assert np.allclose(last, m[-1], rtol=1e-5, atol=1e-8)
    pro, _ = top_influences(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, k=2, **opts)
    full = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, **opts)
    for row in pro.itertuples():
        assert row.score == pytest.approx(full[row.test_id, row.train_id], rel=1e-5, abs=1e-8)
        assert row.score == pytest.approx(np.sort(full[row.test_id])[::-1][row.rank - 1], rel=1e-5, abs=1e-8)


def test_cosine_is_normalised_before_projecting(pt, ckpts):
    model, tok = pt
    d = 16
    got = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, variant="cosine", project=d,
                 per_checkpoint=True, verbose=False)
    for c, (state, lrs) in enumerate(ckpts):
        g_tr, sl = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, state=state, verbose=False)
        g_te, _ = per_example_grads(model, tok, TEST, TEST_LABELS, state=state, verbose=False)
        unit = lambda g: (g / g.norm(dim=1, keepdim=True)).double()
        root = lr_vector(sl, lrs).sqrt().double()
        S = Projection(g_tr.shape[1], d, stream=c).matrix().double()
        want = (((unit(g_te) * root) @ S) @ ((unit(g_tr) * root) @ S).T).numpy()
        assert np.abs(got[c] - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("kwargs, message", [
    (dict(project=0), "project=0"), (dict(project=2.5), "project=2.5"), (dict(project=True), "project=True"),
    (dict(project=8, project_kind="fjlt"), "project_kind='fjlt'"), (dict(project=8, project_seed=-2), "seed=-2"),
    (dict(checkpoints_used=[0, 7]), "no checkpoint at 7"),
])
def test_bad_projection_options_fail_early(pt, ckpts, kwargs, message):
    model, tok = pt
    with pytest.raises(InfluenceError, match=message):
        self_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, verbose=False, **kwargs)


# ----------------------------------------------------------------------------------------------------- memory
def _largest_allocation(fn) -> int:
    """Bytes of the largest single tensor allocation torch made on the CPU while ``fn`` ran."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


@pytest.fixture(scope="module")
def full_tiny():
    """Every weight of the tiny BERT trainable: P ≈ 1.05M, so one example's gradient is 4 MB."""
    model, tok = make_model("full", backbone="tiny")
    names = list(trainable_state(model))
    return model, tok, _perturbed_checkpoints(model, [{n: 1e-3 for n in names}] * 2, scale=0.01)


def test_memory_does_not_grow_with_n_train(full_tiny, monkeypatch):
    """The largest tensor is a chunk's gradients whatever the training-set size, and the map is regenerated block by
    block for every chunk (never kept whole)."""
    model, tok, ck = full_tiny
    P = sum(p.numel() for p in model.parameters())
    calls = []
    original = Projection.block
    monkeypatch.setattr(Projection, "block", lambda self, b: calls.append(b) or original(self, b))
    texts, labels = TRAIN * 2, np.tile(TRAIN_LABELS, 2)  # 24 examples
    for kind, d in (("countsketch", 64), ("rademacher", 4)):
        n_blocks = Projection(P, d, kind=kind).n_blocks
        peak = {}
        for n in (8, 24):
            calls.clear()
            peak[n] = _largest_allocation(lambda: self_influence(model, tok, ck, texts[:n], labels[:n], project=d,
                                                                 project_kind=kind, chunk_size=4, verbose=False))
            assert len(calls) == (n // 4) * len(ck) * n_blocks, kind  # every block, for every chunk
        assert peak[24] <= 1.05 * peak[8], kind  # a chunk's gradients: 4 × P floats
        assert peak[24] < 8 * P * 4 < 24 * P * 4, kind


def test_projected_pairwise_scores_hold_d_not_p_per_test_example(full_tiny):
    model, tok, ck = full_tiny
    P = sum(p.numel() for p in model.parameters())
    test = TRAIN  # 12 test examples: exact holds 12 × P floats per checkpoint (50 MB), projected 12 × 64
    run = lambda **kw: top_influences(model, tok, ck, TRAIN[:4], TRAIN_LABELS[:4], test, TRAIN_LABELS, k=2,
                                      chunk_size=4, with_predictions=False, verbose=False, **kw)
    exact, projected = _largest_allocation(run), _largest_allocation(lambda: run(project=64))
    assert exact >= 12 * P * 4
    assert projected <= 4 * P * 4 * 1.05 and projected * 2 < exact


# ------------------------------------------------------------------------------------------ scorer and CLI
def test_gbair_scorer_passes_projection_options(pt, ckpts):
    from gbair_nb.scorers import ScoreContext

    ctx = ScoreContext(run=None, train=None, val=None, config=None, options={"project": 64, "project_seed": 3})
    kw = ctx.influence_options()
    assert (kw["project"], kw["project_seed"], kw["project_kind"]) == (64, 3, "countsketch")
    assert ScoreContext(None, None, None, None).influence_options()["project"] is None  # exact by default


def test_recover_project_reaches_the_influence_scores(tmp_path, monkeypatch):
    """`recover --project 16` scores G-BAIR with project=16 (the call is recorded), and says so in the report."""
    from gbair_nb import cli, influence

    seen = []
    original = influence.aggregated_influence
    monkeypatch.setattr(influence, "aggregated_influence", lambda *a, **kw: seen.append(kw) or original(*a, **kw))
    out = tmp_path / "rec"
    rc = cli.main(["recover", "--quick", "--backbone", "tiny", "--n-train", "40", "--n-val", "30", "--n-test", "20",
                   "--rounds", "1", "--k", "4", "--scorer", "gbair", "--project", "16", "--quiet",
                   "--out", str(out)])
    assert rc == 0
    assert seen and all(kw["project"] == 16 for kw in seen)
    rep = json.loads((out / "report.json").read_text())
    assert rep["scorers"]["gbair"]["options"]["project"] == 16


def test_influence_cli_project(tmp_path, capsys):
    from gbair_nb import cli

    run_dir = tmp_path / "run"
    args = ["--backbone", "tiny", "--quick", "--quiet", "--n-train", "30", "--n-val", "12", "--n-test", "12",
            "--corrupt", "0.2", "--epochs", "2"]
    assert cli.main(["train", "--dataset", "sms_spam", *args, "--out", str(run_dir)]) == 0
    outs = {}
    for name, extra in (("exact", []), ("projected", ["--project", "4096"])):
        outs[name] = tmp_path / name
        assert cli.main(["influence", "--run", str(run_dir), "--on", "val", "--top-k", "2", "--quiet",
                         "--out", str(outs[name]), *extra]) == 0
    meta = json.loads((outs["projected"] / "influence.json").read_text())
    assert meta["project"] == 4096 and json.loads((outs["exact"] / "influence.json").read_text())["project"] is None
    import pandas as pd

    ex, pr = (pd.read_csv(outs[n] / "self_influence.csv").set_index("id")["self_influence"] for n in outs)
    pr = pr.loc[ex.index]
    # self-influence ‖x‖² is estimated to within a few √(2/d) of itself, and not exactly
    assert np.abs(pr / ex - 1).max() <= 5 * distortion_bound(4096) and not np.allclose(pr, ex, rtol=1e-6)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["influence", "--run", str(run_dir), "--project", "0", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and "--project" in err
    assert not (tmp_path / "bad").exists()
