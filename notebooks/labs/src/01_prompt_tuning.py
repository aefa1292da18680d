# %% [markdown]
# # 01 · What trains in prompt tuning, and what the model reads — {{kind}}
#
# Companion to [`01_prompt_tuning.ipynb`](../01_prompt_tuning.ipynb); theory in
# [docs/theory.md §1](../../docs/theory.md#prompt-tuning). {{companion}}.
#
# Prompt tuning freezes the whole transformer and learns a few vectors prepended to every input, plus a classifier
# head. You count those trainable numbers, build the input sequence a prompt-tuned model reads, and pool its output
# into one sentence vector — three small exercises on planted tensors, then the real all-MiniLM-L6-v2 checks your
# count. About ten seconds, most of it loading the model.

# %% skip
import torch

from gbair_nb.config import setup
from gbair_nb.exercises import check_mean_pooling, check_prompt_tuning_params, check_soft_prompt_inputs

setup()  # changes nothing; reports quick mode, device, torch version and threads

# %% [markdown] slide
# ## Exercise 1 · Count the trainable parameters
# MiniLM has width d = 384. The toolkit's prompt tuning trains m = 20 virtual tokens and a new linear head from the
# mean-pooled d-vector to C class logits (a weight matrix and a bias). Everything else — 22.6 million weights — is
# frozen.
#
# **Expected:** two integers: for the SMS spam filter (C = 2), and for the 3-class tweets (C = 3); both under 10,000.

# %%
m, d = 20, 384
# BEGIN SOLUTION
# lab: n_spam = None    # YOUR CODE HERE (1a): C = 2
# lab: n_tweets = None  # YOUR CODE HERE (1b): C = 3
n_spam = m * d + 2 * d + 2
n_tweets = m * d + 3 * d + 3
# END SOLUTION

# %% check
check_prompt_tuning_params(n_spam, num_virtual_tokens=m, width=d, num_classes=2);
check_prompt_tuning_params(n_tweets, num_virtual_tokens=m, width=d, num_classes=3);

# %% [markdown] slide
# ## Predict before you run (1)
# `gbair_nb.models.make_model("prompt_tuning")` builds the real model. What does `count_trainable` say, and what share
# of all its parameters is that?

# %%
from gbair_nb.pet import count_trainable
from gbair_nb.models import make_model

model, tokenizer = make_model("prompt_tuning", num_labels=2, backbone="minilm", seed=0)
n_total = sum(p.numel() for p in model.parameters())
print(f"trainable {count_trainable(model):,} of {n_total:,} ({count_trainable(model) / n_total:.3%})")
print({name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad})

# %% [markdown]
# <details><summary>Why</summary>
#
# 8,450 = 20 × 384 (the prompt) + 2 × 384 + 2 (the head): under 0.04% of the wrapped model. The listing shows
# the only trainable tensors — peft's prompt embedding (20, 384) and its trainable copy of the head, weight (2, 384)
# and bias (2,) — and nothing from the transformer. (The total also counts MiniLM's 22.57M frozen weights and the
# frozen original of the head; [theory §1](../../docs/theory.md#prompt-tuning) explains the 22.7M quoted elsewhere.)
# </details>

# %% [markdown] slide
# ## Exercise 2 · The sequence the model reads
# A batch of B = 2 texts, T = 6 token positions (the second text is shorter: its last two positions are padding),
# width 8. Prepend the m = 4 soft-prompt vectors to **every** example and extend the attention mask so that the
# prompt is attended to ([theory §1](../../docs/theory.md#prompt-tuning): model input = [P ; E(x)]).
#
# **Expected:** `inputs_embeds` of shape (2, 10, 8) and `mask` of shape (2, 10).

# %%
g = torch.Generator().manual_seed(0)
tokens = torch.randn(2, 6, 8, generator=g)                     # (B, T, d): frozen token embeddings
attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
soft_prompt = torch.randn(4, 8, generator=g)                   # (m, d): the trainable part
# BEGIN SOLUTION
# lab: inputs_embeds = None  # YOUR CODE HERE (2a): (B, m + T, d)
# lab: mask = None           # YOUR CODE HERE (2b): (B, m + T)
B, n_virtual = tokens.shape[0], soft_prompt.shape[0]
inputs_embeds = torch.cat([soft_prompt.unsqueeze(0).expand(B, -1, -1), tokens], dim=1)
mask = torch.cat([torch.ones(B, n_virtual, dtype=attention_mask.dtype), attention_mask], dim=1)
# END SOLUTION

# %% check
check_soft_prompt_inputs(inputs_embeds, mask, soft_prompt=soft_prompt, tokens=tokens, attention_mask=attention_mask);

# %% [markdown] slide
# ## Exercise 3 · Mean pooling over the real positions
# The encoder returns one hidden state per position. MiniLM was trained to embed a sentence as the **mean of its
# hidden states over the unmasked positions** (the prompt's included): pool(h) = Σ_t mask_t h_t / Σ_t mask_t.
# Pool the hidden states below with the mask you built.
#
# **Expected:** `pooled` of shape (2, 8).

# %%
hidden = torch.randn(2, 10, 8, generator=g)                    # (B, m + T, d): the encoder's output
hidden_mask = torch.tensor([[1] * 10, [1] * 8 + [0, 0]])       # the mask of exercise 2
# BEGIN SOLUTION
# lab: pooled = None  # YOUR CODE HERE (3): (B, d)
weights = hidden_mask.unsqueeze(-1).to(hidden.dtype)
pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
# END SOLUTION

# %% check
check_mean_pooling(pooled, hidden, hidden_mask);

# %% [markdown] slide
# ## Predict before you run (2)
# The second text is short. Pool it **alone** (no padding at all) and **in the batch** (two pads at the end). With
# the masked mean, are the two sentence vectors equal? With a plain mean over all positions?

# %%
alone = hidden[1, :8].mean(dim=0)
masked = (hidden[1] * hidden_mask[1, :, None]).sum(0) / hidden_mask[1].sum()
plain = hidden[1].mean(dim=0)
print(f"masked mean vs alone: {(masked - alone).abs().max():.1e}; "
      f"plain mean vs alone: {(plain - alone).abs().max():.2f}")
assert torch.allclose(masked, alone, atol=1e-6) and not torch.allclose(plain, alone, atol=1e-3)

# %% [markdown]
# <details><summary>Why</summary>
#
# The masked mean ignores the pads, so a text gets the same vector whatever it is batched with; the plain mean
# averages the pads' hidden states in, and the prediction would depend on the *other* texts in the batch (how much
# padding this one needed). The same reasoning returns in lab 07: a decoder must read its answer at the last *real*
# token.
# </details>

# %% solution skip
# the results stated up front, asserted (solutions only)
assert n_spam == count_trainable(model) and n_spam < n_tweets < 10_000
assert inputs_embeds.shape == (2, 10, 8) and mask.shape == (2, 10) and pooled.shape == (2, 8)

# %% [markdown] slide
# ## What you practised
# - what trains in prompt tuning: m × d prompt numbers and a C × d + C head — 8,450 on MiniLM;
# - the input is [prompt ; tokens] with the mask extended by m ones;
# - a masked mean pools only the real positions, so batching cannot change a text's vector.
#
# Next: notebook [01](../01_prompt_tuning.ipynb) trains this model as an SMS spam filter.
