"""An independent G-BAIR ranking for tests: per-example gradients from the plain loop (one ``autograd.grad`` per
example), learning rates applied per parameter by name, summed over the validation mistakes under their TRUE labels,
negated. Nothing here goes through TracIn's streaming code, so a test can compare the loop's flagged ids with it."""
from __future__ import annotations

import numpy as np

from gbair_nb.influence import per_example_grads


def loop_gbair_scores(run, train_ds, val_ds) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n_train,), M) for a trained ``Run``: higher = more suspect; M = positions of val mistakes at the
    run's final state."""
    L = run.config.max_length
    M = np.flatnonzero(run.predict_proba(val_ds.texts).argmax(1) != val_ds.labels)
    scores = np.zeros(len(train_ds))
    for ckpt in run.checkpoints:
        state = ckpt.load_state()
        g, slices = per_example_grads(run.model, run.tokenizer, train_ds.texts, train_ds.labels, state=state,
                                      method="loop", max_length=L, verbose=False)
        gm, _ = per_example_grads(run.model, run.tokenizer, [val_ds.texts[i] for i in M], val_ds.labels[M],
                                  state=state, method="loop", max_length=L, verbose=False)
        weighted = gm.double().sum(0)
        for name, sl in slices.items():
            weighted[sl] *= ckpt.lrs[name]
        scores -= (g.double() @ weighted).numpy()
    return scores, M


def assert_top_k(flagged_ids, scores: np.ndarray, ids: np.ndarray, k: int, *, rel: float = 1e-5) -> None:
    """``flagged_ids`` are a top k of ``scores`` (by position; ``ids`` maps positions to ids), up to ties within
    ``rel`` × max|score|: each flagged score is ≥ the k-th largest − tol, each unflagged one ≤ it + tol."""
    tol = rel * np.abs(scores).max()
    kth = np.sort(scores)[::-1][k - 1]
    pos = {int(i): p for p, i in enumerate(ids)}
    flagged = np.array([pos[int(i)] for i in flagged_ids])
    assert len(set(flagged.tolist())) == len(flagged) == k, flagged_ids
    rest = np.setdiff1d(np.arange(len(scores)), flagged)
    assert (scores[flagged] >= kth - tol).all(), ("flagged below the top k", scores[flagged], kth)
    assert (scores[rest] <= kth + tol).all(), ("a top-k example not flagged", ids[rest[scores[rest] > kth + tol]])
