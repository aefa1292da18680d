# %% [markdown]
# # 02 · TracIn by hand — {{kind}}
#
# Companion to [`02_tracin.ipynb`](../02_tracin.ipynb); theory in
# [docs/theory.md §2–3](../../docs/theory.md#tracin). {{companion}}.
#
# You compute TracIn yourself on the two-cloud toy of notebook 02 — 40 points, four of them with a **wrong** label —
# with two trainable tensors that learn at different rates (W and b, like the soft prompt and the head of the real
# model). Three exercises, each with a blank `# YOUR CODE HERE`, the result you should get stated up front, and a
# check cell that says `✓ correct` or `✗ not yet: <hint>`; plus three *predict before you run* questions.
# Everything here is NumPy and runs in about a second.

# %% skip
import numpy as np

from gbair_nb.exercises import check_proponents_opponents, check_self_influence, check_tracin_pair

# %% [markdown] slide
# ## The toy: a softmax classifier θ = (W, b) on 2-D points
# Class 0 on the left, class 1 on the right; points 3, 8, 17 and 30 carry the wrong label. The gradient of one
# example's cross-entropy is the head-gradient formula of [theory §3](../../docs/theory.md#self-influence):
# ∇_W ℓ = (p − e_y) xᵀ and ∇_b ℓ = p − e_y. Training is minibatch SGD for three epochs at rates 0.5, 0.3, 0.1 for W
# (b at half of W's rate); a **checkpoint** keeps θ and the rates in force after every epoch.

# %%
rng = np.random.default_rng(0)
n = 40
y_true = np.arange(n) % 2
X = rng.normal(size=(n, 2))
X[:, 0] += np.where(y_true == 1, 1.5, -1.5)
flipped = np.array([3, 8, 17, 30])  # the four wrong labels
y = y_true.copy()
y[flipped] = 1 - y[flipped]
X_test, y_test = np.array([[1.0, 0.5], [-0.3, -1.0]]), np.array([1, 0])  # two test points, labelled correctly


def probs(theta, x):
    s = theta["W"] @ x + theta["b"]
    e = np.exp(s - s.max())
    return e / e.sum()


def grad(theta, x, label):
    """∇θ ℓ(θ, (x, label)) for ONE example: {"W": (2, 2), "b": (2,)}."""
    d = probs(theta, x)
    d[label] -= 1  # p − e_y
    return {"W": np.outer(d, x), "b": d}


theta = {"W": np.zeros((2, 2)), "b": np.zeros(2)}
checkpoints = []  # (θ_c, {tensor: rate}) after every epoch
order = np.random.default_rng(1)
for lr in [0.5, 0.3, 0.1]:
    rates = {"W": lr, "b": lr / 2}
    for batch in np.array_split(order.permutation(n), 5):
        g = [grad(theta, X[i], y[i]) for i in batch]
        theta = {k: theta[k] - rates[k] * np.mean([gi[k] for gi in g], axis=0) for k in theta}
    checkpoints.append(({k: v.copy() for k, v in theta.items()}, rates))
print(f"{len(checkpoints)} checkpoints; rates {[r for _, r in checkpoints]}")

# %% [markdown] slide
# ## Exercise 1 · TracIn of one pair
# TracInCP(z, z') = Σ_c Σ_tensor η_c[tensor] · ⟨∇_tensor ℓ(θ_c, z), ∇_tensor ℓ(θ_c, z')⟩
# ([theory §2.1](../../docs/theory.md#tracincp)). Compute it for the training point z = point 3 (a wrong label) and
# the test point z' = test point 0, from the gradient dicts below.
#
# **Expected:** one number, **negative** (z opposes z': training on it raised the test loss), between −3 and −1.

# %%
j = 3
g_train = [grad(th, X[j], y[j]) for th, _ in checkpoints]        # per checkpoint: {"W": (2, 2), "b": (2,)}
g_test = [grad(th, X_test[0], y_test[0]) for th, _ in checkpoints]
lrs = [rates for _, rates in checkpoints]                         # per checkpoint: {"W": η, "b": η / 2}
# BEGIN SOLUTION
# lab: tracin_3 = None  # YOUR CODE HERE (1): a single number
tracin_3 = sum(lr[name] * float((gt[name] * gs[name]).sum())
               for gt, gs, lr in zip(g_train, g_test, lrs) for name in gt)
# END SOLUTION
print(tracin_3)

# %% check
check_tracin_pair(tracin_3, g_train, g_test, lrs);

# %% [markdown] slide
# ## Exercise 2 · Self-influence of every training point
# Self-influence(z) = TracInCP(z, z) = Σ_c Σ_p w_c[p] · G[c, z, p]² ([theory §3](../../docs/theory.md#self-influence)):
# **higher = more suspect**. Below, `G` stacks every per-example gradient, flattened (W's 4 entries, then b's 2),
# and `w` holds each parameter's rate at each checkpoint.
#
# **Expected:** a `(40,)` array whose four largest values belong to the four wrong labels 3, 8, 17, 30.

# %%
def flat(g):
    return np.concatenate([g["W"].ravel(), g["b"]])


G = np.stack([[flat(grad(th, X[i], y[i])) for i in range(n)] for th, _ in checkpoints])    # (3, 40, 6)
w = np.stack([np.r_[np.full(4, r["W"]), np.full(2, r["b"])] for _, r in checkpoints])       # (3, 6)
print("G", G.shape, " w", w.shape)
# BEGIN SOLUTION
# lab: self_inf = None  # YOUR CODE HERE (2): a (40,) array
self_inf = (G ** 2 * w[:, None, :]).sum(axis=(0, 2))
# END SOLUTION

# %% check
check_self_influence(self_inf, G, w);

# %% [markdown] slide
# ## Predict before you run (1)
# Multiply **every** learning rate by 10. Do the four strongest opponents of test point 0 change?
# Write your answer down, then run the next cell.

# %%
G_test = np.stack([[flat(grad(th, X_test[i], y_test[i])) for i in range(2)] for th, _ in checkpoints])  # (3, 2, 6)
scores = np.einsum("kip,kp,kjp->ij", G_test, w, G)              # TracIn, (test, train) = (2, 40)
scores_x10 = np.einsum("kip,kp,kjp->ij", G_test, 10 * w, G)
print("opponents at the real rates:", np.argsort(scores[0])[:4], " at 10×:", np.argsort(scores_x10[0])[:4])
assert np.array_equal(np.argsort(scores[0]), np.argsort(scores_x10[0]))

# %% [markdown]
# <details><summary>Why</summary>
#
# Scaling every rate by the same factor scales every score by that factor: the ranking cannot change. What the
# rates decide is how the checkpoints (and the tensors) are weighted *relative to each other* — a schedule that
# decays matters, a global constant does not. (The rates are still worth keeping exact: notebook 02 compares its
# scores with the actual change of the loss.)
# </details>

# %% [markdown] slide
# ## Exercise 3 · Proponents and opponents from the matrix
# `scores[i, j]` is TracIn of training point j on test point i (computed above, one row per test point). Return the
# k = 4 strongest **proponents** (largest scores) and **opponents** (most negative), strongest first, as training
# positions.
#
# **Expected:** the four opponents of test point 0 are exactly the four wrong labels.

# %%
i, k = 0, 4
# BEGIN SOLUTION
# lab: proponents = None  # YOUR CODE HERE (3a): k positions, largest score first
# lab: opponents = None   # YOUR CODE HERE (3b): k positions, most negative first
proponents = np.argsort(-scores[i], kind="stable")[:k]
opponents = np.argsort(scores[i], kind="stable")[:k]
# END SOLUTION

# %% check
check_proponents_opponents(proponents, opponents, scores, i, k);

# %% [markdown] slide
# ## Predict before you run (2)
# Which checkpoint contributes most to the self-influence of the four wrong labels: the first (rate 0.5, after one
# epoch), the second or the third (rate 0.1)?

# %%
per_ckpt = (G ** 2 * w[:, None, :]).sum(axis=2)[:, flipped]   # (checkpoint, wrong label)
share = per_ckpt.sum(axis=1) / per_ckpt.sum()
print("share of the wrong labels' self-influence per checkpoint:", share.round(2))
assert share[0] == share.max()

# %% [markdown]
# <details><summary>Why</summary>
#
# The first: its rate is the largest (0.5), and the wrong labels' gradients stay large at every checkpoint (the
# model never fits them), so the rate decides. Late checkpoints count less because the schedule has decayed — which
# is why the toolkit decays the rate to 10% of its peak, not to zero (theory
# [§1](../../docs/theory.md#prompt-tuning)): the last checkpoint should still have a say.
# </details>

# %% [markdown] slide
# ## Predict before you run (3)
# Add TracIn over all 40 training points for test point 0. Training lowered that point's loss (from log 2 at the
# start). Is the sum positive or negative?

# %%
loss_start = -np.log(probs({"W": np.zeros((2, 2)), "b": np.zeros(2)}, X_test[0])[y_test[0]])
loss_end = -np.log(probs(checkpoints[-1][0], X_test[0])[y_test[0]])
print(f"Σ_z TracIn(z, test 0) = {scores[0].sum():.3f}; the test loss fell by {loss_start - loss_end:.3f}")
print(f"without the four wrong labels: {np.delete(scores[0], flipped).sum():.3f}")
assert scores[0].sum() < 0 < loss_start - loss_end and np.delete(scores[0], flipped).sum() > 0

# %% [markdown]
# <details><summary>Why</summary>
#
# Negative — although training lowered the test loss. TracInCP evaluates the gradients only at the checkpoints,
# **after** each epoch. By then the model already fits test point 0 and the correctly labelled points (their
# gradients are small), while the four wrong labels keep large gradients at every checkpoint. The early steps that
# did most of the learning, at θ = 0, are sampled by no checkpoint. So TracInCP is a *ranking* tool: it says which
# examples pushed which way at the moments it looks, not how much the loss actually changed
# ([theory §2.2](../../docs/theory.md#tracin-sgd): "approximated: the checkpoints sample the trajectory").
# Leave the four wrong labels out and the sum turns positive.
# </details>

# %% solution skip
# the results stated up front, asserted (solutions only)
assert -3 < tracin_3 < -1
assert set(np.argsort(-self_inf)[:4]) == set(flipped)
assert set(opponents) == set(flipped)

# %% [markdown] slide
# ## What you practised
# - TracIn = a rate-weighted sum over checkpoints of gradient dot products, each tensor with its own rate;
# - self-influence = the same with z' = z: a sum of squares, largest for the labels the model keeps fighting;
# - proponents and opponents are the two ends of one row of the (test × train) matrix.
#
# Next: notebook [02](../02_tracin.ipynb) §3 does the same on the prompt-tuned MiniLM, where θ has 8,450 numbers
# and `gbair_nb.influence.tracin` gets all per-example gradients from one batched backward pass.
