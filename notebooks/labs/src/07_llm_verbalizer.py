# %% [markdown]
# # 07 · A decoder as a classifier: the verbalizer's logits — {{kind}}
#
# Companion to [`07_llm_verbalizer.ipynb`](../07_llm_verbalizer.ipynb); theory in
# [docs/theory.md §10](../../docs/theory.md#llm-verbalizer). {{companion}}.
#
# A decoder LLM classifies by answering with a *label word*: put the text in an instruction, run the model, and
# read the next-token logits of the C label words at the **last real token** of each row. You write that read-out on
# planted logits (with right padding, the toolkit's convention), turn it into class probabilities, and then let your
# checker judge the toolkit's own `VerbalizerClassifier` on a tiny random Llama. About ten seconds, most of it
# loading transformers.

# %% skip
import torch

from gbair_nb.config import setup
from gbair_nb.exercises import check_verbalizer_logits, check_verbalizer_probs

setup()  # changes nothing; reports quick mode, device, torch version and threads

# %% [markdown] slide
# ## Exercise 1 · The class logits
# `logits` holds an LM's next-token logits at every position: **(B, T, V)** = (3, 7, 50). Rows are padded on the
# **right** (`attention_mask` 1 … 1 0 … 0): row 0 has 7 real tokens, row 1 has 5, row 2 has 3. The label words are
# the tokens `label_ids` = [11, 29] (class 0 = " ham", class 1 = " spam"). Read each row's logits at its last real
# token, keep the label words' columns.
#
# **Expected:** a **(3, 2)** tensor; column c is class c.

# %%
g = torch.Generator().manual_seed(7)
logits = torch.randn(3, 7, 50, generator=g)                        # (B, T, V)
attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
label_ids = [11, 29]
# BEGIN SOLUTION
# lab: class_logits = None  # YOUR CODE HERE (1): (B, C)
last = attention_mask.sum(dim=1) - 1                               # position of each row's last real token
class_logits = logits[torch.arange(logits.shape[0]), last][:, label_ids]
# END SOLUTION

# %% check
check_verbalizer_logits(class_logits, logits, attention_mask, label_ids);

# %% [markdown] slide
# ## Exercise 2 · Class probabilities
# The classifier answers with one of the label words, so p(c | x) is a softmax over the **C label words' logits
# only** — not over the 50-token vocabulary ([theory §10](../../docs/theory.md#llm-verbalizer)).
#
# **Expected:** a **(3, 2)** tensor whose rows sum to 1.

# %%
# BEGIN SOLUTION
# lab: probs = None  # YOUR CODE HERE (2): (B, C)
probs = torch.softmax(logits[torch.arange(3), attention_mask.sum(dim=1) - 1][:, label_ids], dim=-1)
# END SOLUTION

# %% check
check_verbalizer_probs(probs, logits, attention_mask, label_ids);

# %% [markdown] slide
# ## Predict before you run (1)
# The toolkit's `VerbalizerClassifier` (`gbair_nb.llm`) wraps a frozen decoder the same way, with a soft prompt in
# front. Switch the prompt off (`zero_shot`), run the decoder itself on a right-padded batch, and hand its full
# (B, T, V) logits and the classifier's (B, C) output to **your** checker. Does the toolkit pass?

# %%
from gbair_nb.llm import zero_shot
from gbair_nb.models import make_model

model, tokenizer = make_model("prompt_tuning", backbone="tiny-llm", task="sms_spam", seed=0)  # a tiny random Llama
enc = tokenizer(["WINNER!! free prize, call now", "see you at nine"], return_tensors="pt")
with torch.no_grad(), zero_shot(model):
    toolkit_logits = model(**enc).logits                                                    # (B, C)
    full = model.get_base_model()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
print("real tokens per row:", enc["attention_mask"].sum(dim=1).tolist(), "of", enc["attention_mask"].shape[1],
      "· full logits", tuple(full.shape), "→ class logits", tuple(toolkit_logits.shape))
toolkit_ok = check_verbalizer_logits(toolkit_logits, full, enc["attention_mask"], model.label_ids.tolist())

# %% [markdown]
# <details><summary>Why</summary>
#
# It passes: the classifier pads on the right and reads position (real tokens − 1) of each row, then the label
# words' columns of the LM's own output layer — no new head. Right padding is what makes this safe: in a causal
# decoder a position only attends to earlier ones, so the pads after the last real token cannot change it, and an
# example's class logits are the same whatever it is batched with. (Left padding would put the pads between the
# soft prompt and the text.)
# </details>

# %% [markdown] slide
# ## Predict before you run (2)
# A label word must be **one** token: the classifier reads one next-token logit per class. What happens if you
# choose " spammy" as the word for spam?

# %%
from gbair_nb.llm import LLMError, verbalizer_ids

print("' ham', ' spam' →", verbalizer_ids(tokenizer, [" ham", " spam"]))
try:
    verbalizer_ids(tokenizer, [" ham", " spammy"])
except LLMError as e:
    print("LLMError:", e)

# %% [markdown]
# <details><summary>Why</summary>
#
# The toolkit refuses it before any training: " spammy" is two tokens, and the logit of a first piece (" sp…") is
# not the probability of the word. A leading space matters too: in SmolLM2's vocabulary " spam" (with the space
# the template's "Answer:" is followed by) is one token.
# </details>

# %% solution skip
# the results stated up front, asserted (solutions only)
assert class_logits.shape == (3, 2) and torch.allclose(probs.sum(dim=1), torch.ones(3))
assert toolkit_ok

# %% [markdown] slide
# ## What you practised
# - a verbalizer classifier's logits are the LM's next-token logits of the label words at the last real token;
# - with right padding that position is (number of real tokens) − 1, row by row;
# - p(c | x) is a softmax over the label words only.
#
# Next: notebook [07](../07_llm_verbalizer.ipynb) prompt-tunes SmolLM2-135M this way and runs TracIn and G-BAIR on it.
