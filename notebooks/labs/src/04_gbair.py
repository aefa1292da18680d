# %% [markdown]
# # 04 · The G-BAIR score, the flags and the recovered fraction — {{kind}}
#
# Companion to [`04_gbair.ipynb`](../04_gbair.ipynb); theory in [docs/theory.md §4–5](../../docs/theory.md#gbair).
# {{companion}}.
#
# One round of G-BAIR is three small computations on arrays, and this lab has you write each: the score from the
# per-example gradients, the examples to flag, and — after several rounds — how much of the lost performance came
# back. The gradients are **planted**: random matrices with the shapes of notebook 04's quick run (300 training
# examples, 8,450 trainable parameters, 3 checkpoints, 9 validation mistakes), built so that 21 known training
# labels push against the mistakes the way wrong labels do. No model runs; the lab takes a few seconds.

# %% skip
import numpy as np
import pandas as pd

from gbair_nb.exercises import check_default_k, check_flagged, check_gbair_score, check_recovered_fraction

# %% [markdown] slide
# ## The inputs
# Per checkpoint c (as `gbair_nb.influence.per_example_grads` and `lr_vector` give them in notebook 04 §4):
# - `G_train[c]` — a **(300, 8450)** matrix: row z is ∇ℓ(θ_c, z) of a training example under its *given* label;
# - `G_M[c]` — a **(9, 8450)** matrix: the validation mistakes' gradients under their *true* labels;
# - `lrs[c]` — a **(8450,)** vector: the learning rate of every parameter (the prompt's 7,680 at one rate, the
#   head's 770 at a third of it), decaying from checkpoint to checkpoint.
#
# `is_corrupted` is the truth mask — only for grading, never for scoring.

# %%
rng = np.random.default_rng(4)
n, P, n_prompt, n_M = 300, 8450, 7680, 9
is_corrupted = np.zeros(n, dtype=bool)
is_corrupted[rng.choice(n, 21, replace=False)] = True
toward = rng.normal(size=P)
toward /= np.linalg.norm(toward)  # the direction the mistakes' gradients share
G_train, G_M, lrs = [], [], []
for f in (0.828, 0.588, 0.349):   # the schedule's factor at the three checkpoints
    push = np.where(is_corrupted, rng.uniform(0.2, 2.0, n), rng.normal(0.0, 0.8, n))
    G_train.append((rng.normal(scale=P ** -0.5, size=(n, P)) - push[:, None] * toward).astype(np.float32))
    G_M.append((rng.normal(scale=P ** -0.5, size=(n_M, P))
                + rng.uniform(0.5, 1.5, (n_M, 1)) * toward).astype(np.float32))
    lrs.append(np.r_[np.full(n_prompt, 0.03 * f), np.full(P - n_prompt, 0.01 * f)].astype(np.float32))
print([g.shape for g in G_train], [m.shape for m in G_M], [w.shape for w in lrs])

# %% [markdown] slide
# ## Exercise 1 · The score
# score(z) = −Σ_{z'∈M} TracInCP(z, z') = −Σ_c G_train[c] @ (lrs[c] ⊙ Σ_{z'} G_M[c][z'])
# ([theory §2.6](../../docs/theory.md#tracin-aggregated) and [§4.2](../../docs/theory.md#gbair-toolkit)).
# Sum the mistakes' gradients first: one vector per checkpoint, never a 300 × 9 matrix.
#
# **Expected:** a `(300,)` array, **higher = pushed the model harder toward its mistakes**; at least 9 of its 12
# highest scores are wrong labels (picking 12 at random finds about 1).

# %%
# BEGIN SOLUTION
# lab: score = None  # YOUR CODE HERE (1): a (300,) array
score = -sum(g @ (w * m.sum(axis=0)) for g, m, w in zip(G_train, G_M, lrs))
# END SOLUTION

# %% check
check_gbair_score(score, G_train, G_M, lrs);

# %% [markdown] slide
# ## Predict before you run (1)
# Suppose the round-0 model had made **no** validation mistake (M is empty). What would the score be, and what
# should the loop do?

# %%
empty = [m[:0] for m in G_M]                                      # (0, 8450) per checkpoint
no_mistakes = -sum(g @ (w * m.sum(axis=0)) for g, m, w in zip(G_train, empty, lrs))
print("distinct values of the score:", np.unique(np.abs(no_mistakes)))
assert np.all(no_mistakes == 0)

# %% [markdown]
# <details><summary>Why</summary>
#
# Zero for every example: the sum over an empty set of mistakes is the zero vector, so there is nothing to rank by.
# G-BAIR traces the mistakes you can *see*; without any, it has no signal, and the loop stops ("no validation
# mistakes", [theory §4.3](../../docs/theory.md#gbair-default)) — a model that makes no validation mistake has
# nothing left for it to fix.
# </details>

# %% [markdown] slide
# ## Exercise 2 · The budget and the flags
# Round 2 has new scores (the model was retrained after round 1), and the 12 examples flagged in round 1 have been
# reviewed: an example is **never flagged twice**. First the budget k: the toolkit's `default_k` is 4% of the
# training set, rounded, at least 5. Then flag the k highest-scoring examples not reviewed yet, highest first
# (ties: training-set order — a stable sort).
#
# **Expected:** k = 12, and 12 positions none of which is in `reviewed`.

# %%
score_round2 = rng.normal(size=n) + 2.0 * is_corrupted          # round 2's scores (planted)
reviewed = np.zeros(n, dtype=bool)
reviewed[np.argsort(-(rng.normal(size=n) + 3.0 * is_corrupted), kind="stable")[:12]] = True  # round 1's flags
# BEGIN SOLUTION
# lab: k = None        # YOUR CODE HERE (2a): an int
# lab: flagged = None  # YOUR CODE HERE (2b): k positions, most suspect first
k = max(5, round(0.04 * n))
candidates = np.where(reviewed, -np.inf, score_round2)
flagged = np.argsort(-candidates, kind="stable")[:k]
# END SOLUTION

# %% check
check_default_k(k, n);
check_flagged(flagged, score_round2, reviewed, 12);

# %% [markdown] slide
# ## Predict before you run (2)
# How many wrong labels would 12 examples picked **at random** among the unreviewed ones hold, on average? And your
# flags?

# %%
pool = np.flatnonzero(~reviewed)
draws = np.random.default_rng(0).choice(pool, size=(2000, 12))
print(f"random: {is_corrupted[draws].sum(axis=1).mean():.2f} wrong labels on average "
      f"(the pool's rate × 12 = {is_corrupted[pool].mean() * 12:.2f})")
top = np.argsort(-np.where(reviewed, -np.inf, score_round2), kind="stable")[:12]
print(f"the 12 highest scores: {is_corrupted[top].sum()} wrong labels")
assert is_corrupted[top].sum() > 3 * is_corrupted[pool].mean() * 12

# %% [markdown]
# <details><summary>Why</summary>
#
# At random you find the base rate: 12 × (wrong labels left) / (examples left), well under one label here, because
# round 1 already took most of the wrong ones. Random relabeling at the same budget is the baseline every recovery
# curve shows; a scorer earns its keep by beating it several times over, round after round.
# </details>

# %% [markdown] slide
# ## Exercise 3 · The recovered fraction, with the rollback
# A loop ran five fix-and-retrain rounds (patience 3). Round 0 trained on the corrupted labels; the clean-label model
# reaches test macro-F1 `clean`. The loop keeps the labels of the round with the **best validation macro-F1** (the
# earliest of equals) and rolls back the rest ([theory §4.3](../../docs/theory.md#gbair-default)); the recovered
# fraction is read on that kept round ([§5](../../docs/theory.md#recovered-fraction)):
# (test F1 of the kept round − test F1 of round 0) / (clean − test F1 of round 0).
#
# **Expected:** one number between 0.7 and 0.8 — not the last round's, and not the best *test* round's.

# %%
rounds = pd.DataFrame({"round": [0, 1, 2, 3, 4, 5],
                       "val_macro_f1": [0.70, 0.86, 0.91, 0.89, 0.91, 0.90],
                       "test_macro_f1": [0.72, 0.85, 0.88, 0.90, 0.86, 0.87]})
clean = 0.93
# BEGIN SOLUTION
# lab: recovered = None  # YOUR CODE HERE (3): one number
kept = int(rounds["val_macro_f1"].idxmax())  # idxmax returns the first of equal maxima
corrupted = rounds.loc[0, "test_macro_f1"]
recovered = (rounds.loc[kept, "test_macro_f1"] - corrupted) / (clean - corrupted)
# END SOLUTION
rounds

# %% check
check_recovered_fraction(recovered, rounds, clean);

# %% solution skip
# the results stated up front, asserted (solutions only)
assert is_corrupted[np.argsort(-score, kind="stable")[:12]].sum() >= 9
assert k == 12 and not reviewed[flagged].any()
assert 0.7 < recovered < 0.8

# %% [markdown] slide
# ## What you practised
# - the G-BAIR score is one matrix–vector product per checkpoint, against the *summed* mistake gradients;
# - flags are the top k of the score among examples not reviewed yet, with k = 4% of the training set;
# - the loop keeps the best round *by validation*, and the recovered fraction is read there — never on the test set's
#   favourite, never simply on the last round.
#
# Next: notebook [04](../04_gbair.ipynb) §4–7 runs exactly this on the prompt-tuned MiniLM and compares it with the
# library's loop (`gbair_nb.recovery.gbair`).
