# %% [markdown]
# # 05 · Reading a label-error detector: recall, precision@k, average precision, AUROC — {{kind}}
#
# Companion to [`05_which_detector.ipynb`](../05_which_detector.ipynb); theory in
# [docs/theory.md §6](../../docs/theory.md#detection-metrics). {{companion}}.
#
# A detector gives every training example a score, **higher = more likely mislabeled**; the truth mask
# `is_corrupted` grades it. You compute the four numbers notebook 05 compares detectors with, by hand, on two
# planted detectors shaped like notebook 05's findings under class-conditional noise: a *loss-like* score that ranks
# the wrong labels high but puts correctly labelled spam at the very top, and a *G-BAIR-like* score. NumPy only.

# %% skip
import numpy as np

from gbair_nb.exercises import (check_auroc, check_average_precision, check_flip_rates, check_one_way_share,
                                check_precision_at_k, check_recall_at)

# %% [markdown] slide
# ## The data
# 290 training examples, 20 wrong labels; 25 correctly labelled spam that a collapsed model calls ham (the loss
# ranks those first).

# %%
rng = np.random.default_rng(5)
n = 290
kind = np.array(["ham"] * 245 + ["hidden spam (wrong)"] * 20 + ["spam labelled spam"] * 25)
rng.shuffle(kind)
is_corrupted = kind == "hidden spam (wrong)"
loss_like = np.select([kind == "spam labelled spam", is_corrupted],
                      [rng.uniform(3.0, 4.0, n), rng.uniform(1.2, 3.0, n)], rng.normal(0.0, 0.6, n))
gbair_like = np.where(is_corrupted, rng.normal(2.2, 1.0, n), rng.normal(0.0, 1.0, n))
print(f"{n} examples, {is_corrupted.sum()} wrong labels")

# %% [markdown] slide
# ## Exercise 1 · Recall at 4% inspected
# Inspect the top ⌈0.04 × n⌉ examples by score (at least one; 4% is the toolkit's budget for one round) and report
# the share of **all** wrong labels found ([theory §6](../../docs/theory.md#recall-at-inspected)). Inspecting at
# random finds 4% of them on average.
#
# **Expected:** one number in [0, 1]; for `gbair_like`, far above 0.04 (between 0.3 and 0.7).

# %%
fraction = 0.04
# BEGIN SOLUTION
# lab: recall = None  # YOUR CODE HERE (1): one number
m = max(1, int(np.ceil(fraction * n)))
order = np.argsort(-gbair_like, kind="stable")
recall = is_corrupted[order[:m]].sum() / is_corrupted.sum()
# END SOLUTION

# %% check
check_recall_at(recall, gbair_like, is_corrupted, fraction);

# %% [markdown] slide
# ## Exercise 2 · Precision@k
# The share of wrong labels among the k highest scores — with k = one round's budget, it is the round's flagged
# precision. Compute it for both detectors with k = 12.
#
# **Expected:** two numbers; the G-BAIR-like one is higher.

# %%
k = 12
# BEGIN SOLUTION
# lab: precision_loss = None   # YOUR CODE HERE (2a)
# lab: precision_gbair = None  # YOUR CODE HERE (2b)
precision_loss = is_corrupted[np.argsort(-loss_like, kind="stable")[:k]].mean()
precision_gbair = is_corrupted[np.argsort(-gbair_like, kind="stable")[:k]].mean()
# END SOLUTION

# %% check
check_precision_at_k(precision_loss, loss_like, is_corrupted, k);
check_precision_at_k(precision_gbair, gbair_like, is_corrupted, k);

# %% [markdown] slide
# ## Predict before you run (1)
# The loss-like score puts 25 correct labels above every wrong one, then the 20 wrong labels above almost all the
# rest. Is its AUROC closer to 0.5 or to 1? Is its precision@12 above 0.5?

# %%
from sklearn.metrics import roc_auc_score

print(f"loss-like: AUROC {roc_auc_score(is_corrupted, loss_like):.3f}, "
      f"precision@12 {is_corrupted[np.argsort(-loss_like)[:12]].mean():.2f}")
assert roc_auc_score(is_corrupted, loss_like) > 0.8 and is_corrupted[np.argsort(-loss_like)[:12]].mean() == 0

# %% [markdown]
# <details><summary>Why</summary>
#
# AUROC averages over every (wrong, correct) pair: each wrong label beats the 245 ordinary ham and loses only to the
# 25 spam, so AUROC is high (about 245/270 ≈ 0.9). But a relabeling budget only reads the **top**, and the top 25
# are all correct: precision@12 is 0, and flipping those 12 would break 12 good labels. This is what notebook 05
# measures for the loss under class-conditional noise — read precision@k and average precision beside AUROC.
# </details>

# %% [markdown] slide
# ## Predict before you run (2) · average precision by hand
# Ten examples with scores 0.9, 0.8, …, 0.0 (highest first); the wrong labels are at ranks **1, 3 and 10**. Average
# precision is the mean, over the wrong labels, of the precision of the list cut at each of them. Work it out on
# paper, then run the cell.

# %%
from sklearn.metrics import average_precision_score

toy_scores = np.linspace(0.9, 0.0, 10)
toy_wrong = np.isin(np.arange(1, 11), [1, 3, 10])
print(f"average precision = {average_precision_score(toy_wrong, toy_scores):.3f}")

# %% [markdown]
# <details><summary>Why</summary>
#
# Cut at rank 1: 1 wrong of 1 → 1. Cut at rank 3: 2 of 3 → 0.667. Cut at rank 10: 3 of 10 → 0.3. The mean is
# (1 + 0.667 + 0.3) / 3 ≈ **0.656** ([theory §6](../../docs/theory.md#average-precision)). A wrong label found
# late costs little recall but drags its precision term down: AP rewards putting the wrong labels at the very top.
# </details>

# %% [markdown] slide
# ## Exercise 3 · Average precision of the two detectors
# The same computation on the planted detectors.
#
# **Expected:** two numbers in (0, 1]; the G-BAIR-like one is higher.

# %%
# BEGIN SOLUTION
# lab: ap_loss = None   # YOUR CODE HERE (3a)
# lab: ap_gbair = None  # YOUR CODE HERE (3b)
def average_precision(scores, wrong):
    hits = wrong[np.argsort(-scores, kind="stable")]
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return precision_at_rank[hits].mean()


ap_loss, ap_gbair = average_precision(loss_like, is_corrupted), average_precision(gbair_like, is_corrupted)
# END SOLUTION

# %% check
check_average_precision(ap_loss, loss_like, is_corrupted);
check_average_precision(ap_gbair, gbair_like, is_corrupted);

# %% [markdown] slide
# ## Exercise 4 · AUROC by counting pairs
# AUROC = the share of (wrong, correct) pairs in which the wrong label scores higher, a tie counting ½
# ([theory §6](../../docs/theory.md#auroc)). Count them on this small example, which has ties.
#
# **Expected:** one number; 12 (wrong, correct) pairs here.

# %%
small_scores = np.array([0.9, 0.7, 0.7, 0.5, 0.5, 0.3, 0.2])
small_wrong = np.array([True, False, True, True, False, False, False])
# BEGIN SOLUTION
# lab: auroc = None  # YOUR CODE HERE (4): one number
diff = small_scores[small_wrong][:, None] - small_scores[~small_wrong][None, :]
auroc = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
# END SOLUTION

# %% check
check_auroc(auroc, small_scores, small_wrong);

# %% [markdown] slide
# ## Exercise 5 · Which way do the wrong labels point?
# Notebook 05's `scorer="auto"` asks a *trusted probe* — a classifier fit on the clean validation set only — before
# it picks a detector. The probe gives every training example its class probabilities `proba[z] = (p(ham | z),
# p(spam | z))`; read them as a soft truth. The expected number of **true** class i among the examples **labelled**
# j is Σ p(i | z) over those examples; divided by the expected size of class i (the sum over all examples), it is
# the **flip rate** i → j: the fraction of class i that carries label j
# ([theory §4.3](../../docs/theory.md#gbair-default)). Compute the 2 × 2 matrix, row = true class, column = given
# label, 0 on the diagonal.
#
# Here 20 of the 50 spam carry the label ham, and no ham carries the label spam.
#
# **Expected:** a (2, 2) array; spam → ham (row 1, column 0) near 0.5, ham → spam (row 0, column 1) below 0.1 —
# not 0, because the probe is not certain even of the ham.

# %%
rng = np.random.default_rng(7)
truth = np.array([0] * 150 + [1] * 50)              # 0 = ham, 1 = spam
given = truth.copy()
given[150:170] = 0                                  # 20 spam labelled ham: the noise points one way
p_spam = np.where(truth == 1, rng.beta(8, 2, 200), rng.beta(1, 12, 200))
proba = np.stack([1 - p_spam, p_spam], axis=1)      # the probe's probabilities; it never saw `given`
# BEGIN SOLUTION
# lab: rates = None  # YOUR CODE HERE (5): a (2, 2) array
joint = np.stack([proba[given == j].sum(0) for j in range(2)], axis=1)  # [true i, given j]
rates = joint / joint.sum(1, keepdims=True)
np.fill_diagonal(rates, 0.0)
# END SOLUTION

# %% check
check_flip_rates(rates, proba, given);

# %% [markdown] slide
# ## Exercise 6 · The one-way share, and what auto picks
# The **one-way share** is the largest flip rate over the sum of all of them: 1 when every wrong label points the
# same way, ½ when two classes are flipped at equal rates. Auto scores with G-BAIR when it is at least 0.9 (wrong
# labels pointing one way: the clean validation classes pull against them together) and with the probe otherwise.
# Compute it for your `rates`, and for `rates_both`: the probe's estimate when 20 ham are labelled spam as well.
#
# **Expected:** two numbers in [0.5, 1]; yours at least 0.9, `rates_both`'s below it.

# %%
rates_both = np.array([[0.0, 0.173], [0.525, 0.0]])  # 20 spam labelled ham AND 20 ham labelled spam
# BEGIN SOLUTION
# lab: share = None       # YOUR CODE HERE (6a): one number, from `rates`
# lab: share_both = None  # YOUR CODE HERE (6b): one number, from `rates_both`
share = rates.max() / rates.sum()
share_both = rates_both.max() / rates_both.sum()
# END SOLUTION

# %% check
check_one_way_share(share, rates);
check_one_way_share(share_both, rates_both);

# %%
from gbair_nb.scorers import AUTO_ONE_WAY, DEFAULT_GBAIR

for name, s in (("one way", share), ("both ways", share_both)):
    if s is not None:
        print(f"{name}: one-way share {s:.2f} → auto scores with {DEFAULT_GBAIR if s >= AUTO_ONE_WAY else 'probe'}")

# %% [markdown] slide
# ## Predict before you run (3)
# A detector that scores at random: what recall should it reach at 10% inspected, on average?

# %%
random_recall = [is_corrupted[np.argsort(-np.random.default_rng(s).random(n))[:29]].mean() * 29 / 20
                 for s in range(500)]
print(f"mean recall at 10% inspected over 500 random orders: {np.mean(random_recall):.3f}")
assert abs(np.mean(random_recall) - 0.10) < 0.02

# %% [markdown]
# <details><summary>Why</summary>
#
# 10%: a random order spreads the wrong labels evenly, so the top 10% holds 10% of them on average — the diagonal
# of notebook 02's inspection curve. A detector's recall at F% is worth reading only against F.
# </details>

# %% [markdown] slide
# ## Predict before you run (4)
# Suppose every one of the 200 labels were right (`truth` as the labels). Would the probe's flip rates be 0, and
# its one-way share 1?

# %%
joint_clean = np.stack([proba[truth == j].sum(0) for j in range(2)], axis=1)
rates_clean = joint_clean / joint_clean.sum(1, keepdims=True) * (1 - np.eye(2))
print(f"flip rates with every label right: {rates_clean.round(3).tolist()}, "
      f"one-way share {rates_clean.max() / rates_clean.sum():.2f}")
assert (rates_clean[~np.eye(2, dtype=bool)] > 0).all() and rates_clean.max() / rates_clean.sum() < 0.9

# %% [markdown]
# <details><summary>Why</summary>
#
# No: the probe is a small classifier, and the probability it leaves on the other class looks like a little noise
# in **both** directions, so clean labels give small rates both ways and a share well below 1. That is why
# auto's threshold sits at 0.9 rather than 1, and why mild one-way noise (a few wrong labels against the probe's
# own doubt) can read as two-way: docs/benchmarks.md measures where that happens on the built-in data.
# </details>

# %% solution skip
# the results stated up front, asserted (solutions only)
assert 0.3 <= recall <= 0.7
assert precision_gbair > precision_loss and ap_gbair > ap_loss
assert diff.size == 12
assert rates.shape == (2, 2) and 0.4 < rates[1, 0] < 0.6 and 0 < rates[0, 1] < 0.1
assert 0.5 <= share_both < AUTO_ONE_WAY <= share <= 1

# %% [markdown] slide
# ## What you practised
# - recall at F% divides by **all** wrong labels; precision@k divides by **k**;
# - average precision averages the precision at each wrong label's rank; AUROC counts pairs, ties ½;
# - a high AUROC can hide a useless top: read the metric that matches how the scores are used;
# - a clean-set probe estimates which way the wrong labels point (flip rates, row = true class) before any
#   detector runs, and the one-way share of those rates is what the main job's `auto` decides by.
#
# `gbair_nb.metrics.detection_metrics(scores, is_corrupted, k=…)` computes all four; notebook
# [05](../05_which_detector.ipynb) uses it on eight real detectors.
