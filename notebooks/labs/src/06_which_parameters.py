# %% [markdown]
# # 06 · Counting what LoRA and GIFT train, and what a gradient mask does under AdamW — {{kind}}
#
# Companion to [`06_which_parameters.ipynb`](../06_which_parameters.ipynb); theory in
# [docs/theory.md §9](../../docs/theory.md#pet-methods). {{companion}}.
#
# Two parameter counts you derive on paper and then check against the real models, and one optimizer step you
# write yourself to see why masking a gradient does not freeze a weight under AdamW. About ten seconds, most of it
# building two MiniLM models.

# %% skip
import numpy as np
import torch

from gbair_nb.config import setup
from gbair_nb.exercises import check_gift_params, check_lora_params, check_masked_adam

setup()  # changes nothing; reports quick mode, device, torch version and threads

# %% [markdown] slide
# ## Exercise 1 · LoRA's count
# LoRA adapts a frozen ω (d_out × d_in) as ω + B A, with B: d_out × r and A: r × d_in, in **every** adapted layer.
# The toolkit adapts the query and value projections (384 × 384) of each of MiniLM's 6 layers at rank r = 8.
# Leave the classifier head out.
#
# **Expected:** one integer, between 50,000 and 100,000.

# %%
r, width, n_layers, n_types = 8, 384, 6, 2    # rank, d_in = d_out, layers, projection types (query, value)
# BEGIN SOLUTION
# lab: n_lora = None  # YOUR CODE HERE (1): an int
n_lora = r * (width + width) * n_layers * n_types
# END SOLUTION

# %% check
check_lora_params(n_lora, r=r, d_in=width, d_out=width, n_layers=n_layers, n_targets=n_types);

# %% [markdown] slide
# ## Exercise 2 · GIFT's count
# GIFT generates the update from the frozen weight: ω (I + φ ψ), with φ: d_in × r and ψ: r × d_in. One (φ, ψ) pair
# is **shared by all layers of a type** — one for every query projection, one for every value projection.
#
# **Expected:** one integer, several times smaller than LoRA's.

# %%
# BEGIN SOLUTION
# lab: n_gift = None  # YOUR CODE HERE (2): an int
n_gift = 2 * width * r * n_types
# END SOLUTION

# %% check
check_gift_params(n_gift, r=r, d_in=width, n_pairs=n_types, n_layers=n_layers);

# %% [markdown] slide
# ## Predict before you run (1)
# `count_trainable` of the real models includes the head (2 × 384 + 2 = 770). What does it say for LoRA and GIFT,
# and what would the ratio LoRA / GIFT become on a 12-layer model of the same width?

# %%
from gbair_nb.pet import count_trainable
from gbair_nb.models import make_model

head = 2 * width + 2
counts = {method: count_trainable(make_model(method, backbone="minilm", seed=0, r=r)[0]) for method in ("lora", "gift")}
print(counts, "→ without the head:", {m: c - head for m, c in counts.items()})
print(f"LoRA / GIFT: {(counts['lora'] - head) / (counts['gift'] - head):.0f}× here; on 12 layers: "
      f"{2 * (counts['lora'] - head) / (counts['gift'] - head):.0f}×")

# %% [markdown]
# <details><summary>Why</summary>
#
# 74,498 and 13,058: your counts plus the head. LoRA's count grows with the number of layers, GIFT's does not (its
# pairs are shared), so the ratio doubles with twice the depth: 6× here, 12× on 12 layers
# ([theory §9.2](../../docs/theory.md#gift)).
# </details>

# %% [markdown] slide
# ## Exercise 3 · Masking the gradient vs masking the update, under AdamW
# GMT keeps, at each step, only the entries with the largest |gradient|. With `mask="gradient"` the other entries'
# gradients are zeroed before the optimizer step; with `mask="update"` they are also put back after the step.
# Complete the two marked lines of this AdamW (torch's update rule, no weight decay), then see what happens on a
# three-parameter toy with `keep=1`.
#
# **Expected:** the checker calls your function with both masks and compares the weights after three steps.

# %%
def adamw_masked(w, grads, *, keep, mask, lr=0.1, betas=(0.9, 0.999), eps=1e-8):
    w = np.array(w, dtype=float)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=float)
        kept = np.zeros(len(g), dtype=bool)
        kept[np.argsort(-np.abs(g), kind="stable")[:keep]] = True      # the mask: the top-`keep` |gradient|
        # BEGIN SOLUTION
        # lab: raise NotImplementedError("YOUR CODE HERE (3a): zero the gradient outside the mask")
        g = g * kept
        # END SOLUTION
        before = w.copy()
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        if mask == "update":
            # BEGIN SOLUTION
            # lab: raise NotImplementedError("YOUR CODE HERE (3b): put the masked entries back")
            w = np.where(kept, w, before)
            # END SOLUTION
    return w


w0 = [1.0, 1.0, 1.0]
toy_grads = [[1.0, 0.1, -0.5], [0.1, 1.0, 0.2], [0.3, -0.2, 1.0]]   # entry 0 is kept only in step 1

# %% check
check_masked_adam(adamw_masked, w=w0, grads=toy_grads, keep=1);

# %% [markdown] slide
# ## Predict before you run (2)
# Entry 0 has the largest gradient in step 1 only; steps 2 and 3 mask it. After step 1, does it move again under
# `mask="gradient"`? Under `mask="update"`? And under plain SGD with `mask="gradient"`? The cell runs the toolkit's
# own `GradientMasker` with torch's optimizers.

# %%
from functools import partial

from gbair_nb.exercises import adamw_reference
from gbair_nb.gmt import GradientMasker


def run_masker(optimizer, mask):
    holder = torch.nn.Module()
    holder.w = torch.nn.Parameter(torch.tensor(w0))
    opt = optimizer([holder.w], lr=0.1)
    masker = GradientMasker(holder, keep_ratio=1 / 3, mask=mask, exclude=())
    trace = []
    for grad in toy_grads:
        holder.w.grad = torch.tensor(grad)
        masker.before_step()
        opt.step()
        masker.after_step()
        trace.append(round(holder.w[0].item(), 4))
    return trace, holder.w.detach().numpy()


adamw = partial(torch.optim.AdamW, weight_decay=0.0)  # the toolkit trains with no weight decay
for name, optimizer, mask in [("AdamW, gradient mask", adamw, "gradient"), ("AdamW, update mask", adamw, "update"),
                              ("SGD, gradient mask", torch.optim.SGD, "gradient")]:
    trace, final = run_masker(optimizer, mask)
    print(f"{name:>22}: entry 0 after steps 1, 2, 3 = {trace}")
    if optimizer is adamw:  # the NumPy reference the checker uses agrees with torch + the toolkit's masker
        assert np.allclose(final, adamw_reference(w0, toy_grads, keep=1, mask=mask), atol=1e-6)

# %% [markdown]
# <details><summary>Why</summary>
#
# Under AdamW with a gradient mask, entry 0 keeps moving in steps 2 and 3: Adam steps by the running mean m of
# past gradients, and m still remembers step 1 (theory's worked example: 0.67 η, then 0.52 η). Under an update mask
# it stays put, and under SGD a zero gradient is a zero step. (torch's AdamW also decays every weight by default,
# `weight_decay=0.01`, which moves masked weights too; the toolkit trains with weight decay 0, as this cell does.)
# </details>

# %% solution skip
# the results stated up front, asserted (solutions only)
assert 50_000 < n_lora < 100_000 and n_gift * 6 == n_lora
assert counts == {"lora": n_lora + head, "gift": n_gift + head}

# %% [markdown] slide
# ## What you practised
# - LoRA: r (d_in + d_out) per adapted layer, every layer; GIFT: 2 d_in r per shared pair, whatever the depth;
# - under AdamW, masking the gradient is not freezing the weight — only restoring it after the step is.
#
# Next: notebook [06](../06_which_parameters.ipynb) trains all these methods on the same data and runs G-BAIR with each.
