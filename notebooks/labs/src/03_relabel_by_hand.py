# %% [markdown]
# # 03 · Choosing what to review, and what the journal keeps — {{kind}}
#
# Companion to [`03_relabel_by_hand.ipynb`](../03_relabel_by_hand.ipynb); theory in
# [docs/theory.md §3–4](../../docs/theory.md#self-influence). {{companion}}.
#
# A person can review only a few examples per round. You pick them twice — from self-influence (notebook 02's
# signal, no validation set needed) and from the influence explorer's table of opponents of the model's validation
# mistakes (which notebook 04 then automates as G-BAIR) — and then work out what a relabel session holds after a
# sequence of clicks with undos, checked against the toolkit's own `RelabelSession`. Runs in a second or two.

# %% skip
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from gbair_nb.exercises import check_journal_replay, check_opposition_pick, check_review_pick
from gbair_nb.relabel import RelabelSession

# %% [markdown] slide
# ## Exercise 1 · Review by self-influence
# 120 training examples with their dataset **ids** (a session, a journal and the widget all speak ids, never
# positions) and their self-influence (higher = more suspect). Eight were reviewed last round: an example already
# reviewed is never flagged again. Pick the k = 8 to review now, most suspect first.
#
# **Expected:** a list of 8 ids, none of them in `reviewed_ids`.

# %%
rng = np.random.default_rng(3)
ids = np.sort(rng.choice(4862, size=120, replace=False))     # dataset ids, not positions
self_inf = rng.gamma(2.0, 1.0, size=120)                    # higher = more suspect
reviewed_ids = set(ids[np.argsort(-self_inf)[[0, 2, 3, 5, 9, 11, 14, 20]]].tolist())
k = 8
# BEGIN SOLUTION
# lab: review_ids = None  # YOUR CODE HERE (1): k ids, most suspect first
order = np.argsort(-self_inf, kind="stable")
review_ids = [int(ids[p]) for p in order if int(ids[p]) not in reviewed_ids][:k]
# END SOLUTION

# %% check
check_review_pick(review_ids, self_inf, ids, reviewed_ids, k);

# %% [markdown] slide
# ## Exercise 2 · Review the opponents of the mistakes
# The influence explorer lists, for each validation mistake, its strongest proponents (score > 0) and opponents
# (score < 0) among the training examples — one row per (mistake, training example). An example that opposed
# *several* mistakes is a better suspect than one that opposed a single one: add up each example's scores over the
# rows that name it, and review the k = 5 with the most negative total, most negative first.
#
# **Expected:** 5 distinct train ids; this is G-BAIR's score restricted to the pairs the table lists.

# %%
pool = np.sort(rng.choice(4862, size=25, replace=False))
rows = []
for mistake in (17, 42, 73, 96):
    chosen = rng.choice(pool, size=10, replace=False)
    for j, train_id in enumerate(chosen):
        sign = 1.0 if j < 5 else -1.0               # 5 proponents, 5 opponents per mistake
        rows.append({"test_id": mistake, "train_id": int(train_id), "score": sign * rng.uniform(0.05, 1.0)})
table = pd.DataFrame(rows)
k_table = 5
# BEGIN SOLUTION
# lab: suspects = None  # YOUR CODE HERE (2): k_table train ids, largest opposition first
opposition = -table.groupby("train_id")["score"].sum()
suspects = opposition.sort_values(ascending=False, kind="stable").index[:k_table].tolist()
# END SOLUTION
table.head(6)

# %% check
check_opposition_pick(suspects, table, k_table);

# %% [markdown] slide
# ## Exercise 3 · What the session holds after these clicks
# Five flagged examples with ids 101 … 105 and labels 0 = ham, 1 = spam. A reviewer clicks, in order:
#
# 1. relabel 101 → spam · 2. remove 103 · 3. keep 102 · 4. **undo** · 5. relabel 103 → ham · 6. **undo** ·
# 7. relabel 104 → spam · 8. remove 105 · 9. **undo**
#
# *Undo* cancels the last decision not yet undone; *remove* drops an example from training but leaves its label as
# it was. Write, by hand, each example's label and whether it is still kept (in training) at the end.
#
# **Expected:** two lists of 5 (labels as 0/1, kept as True/False).

# %%
flagged_ids, start_labels = [101, 102, 103, 104, 105], [0, 1, 1, 0, 0]
clicks = [("relabel", 101, 1), ("remove", 103), ("keep", 102), ("undo",), ("relabel", 103, 0), ("undo",),
          ("relabel", 104, 1), ("remove", 105), ("undo",)]
# BEGIN SOLUTION
# lab: labels_after = None  # YOUR CODE HERE (3a): 5 labels
# lab: kept_after = None    # YOUR CODE HERE (3b): 5 booleans
labels_after = [1, 1, 1, 1, 0]
kept_after = [True, True, False, True, True]
# END SOLUTION

# %% check
check_journal_replay(labels_after, kept_after, ids=flagged_ids, labels0=start_labels, actions=clicks);

# %% [markdown] slide
# ## Predict before you run (1)
# Replay the same clicks in a real `RelabelSession`. How many lines does its journal file get, and how many
# *effective* decisions does `session.decisions()` list?

# %%
journal = Path(tempfile.mkdtemp()) / "lab03.jsonl"
session = RelabelSession(flagged_ids, start_labels, ["ham", "spam"], journal, fingerprint="lab03")
for action, *args in clicks:
    getattr(session, action)(*args)
lines = journal.read_text().splitlines()
print(f"{len(lines)} journal lines (one header + one per click); {len(session.decisions())} effective decisions")
session.decisions()[["id", "action", "old_label", "new_label"]]

# %% [markdown]
# <details><summary>Why</summary>
#
# Every click is a line — undos too — appended and `fsync`-ed the moment it is made, after one header line: the
# journal is the full history, never rewritten. The *effective* decisions are what survives the undos: three here
# (101 relabeled, 103 removed, 104 relabeled). Keeping the history and deriving the state from it is what makes an
# undo itself undoable by reading the file, and lets a colleague audit every click.
# </details>

# %% [markdown] slide
# ## Predict before you run (2)
# The kernel dies. You open a new session on the same journal file. What are its labels?

# %%
reopened = RelabelSession(flagged_ids, start_labels, ["ham", "spam"], journal, fingerprint="lab03")
print("labels", reopened.labels().tolist(), " kept", reopened.kept_mask().tolist())
assert np.array_equal(reopened.labels(), session.labels()) and np.array_equal(reopened.kept_mask(), session.kept_mask())

# %% [markdown]
# <details><summary>Why</summary>
#
# The same: opening a session on an existing journal replays it from the first line, undos included, so the state
# after a restart is exactly the state before. The fingerprint guards against replaying a journal onto another
# dataset (try `fingerprint="other"`: the session refuses).
# </details>

# %% solution skip
# the results stated up front, asserted (solutions only)
assert len(review_ids) == k and not set(review_ids) & reviewed_ids
assert len(set(suspects)) == k_table
assert len(lines) == 1 + len(clicks) and len(session.decisions()) == 3

# %% [markdown] slide
# ## What you practised
# - a person's budget goes to the most suspect examples *not yet reviewed*, named by id;
# - summing each example's opposition over the mistakes is G-BAIR's score in table form (notebook 04 computes it for
#   every example and every mistake at once);
# - the journal is append-only history; the labels are what its replay leaves, undos included.
#
# Next: notebook [03](../03_relabel_by_hand.ipynb) runs the whole round with `HumanRounds` and the widget.
