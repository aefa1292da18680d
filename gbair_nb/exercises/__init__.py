"""Checkers for the lab notebooks (``notebooks/labs/``): one per exercise, right or wrong with a hint.

Every checker takes the student's answer first, then the inputs it was computed from; it computes the right answer
itself from those inputs (nothing is hard-coded), compares, and prints one line:

- ``✓ correct``, or
- ``✗ not yet: <hint>`` — the hint names the likely mistake (a flipped sign, a forgotten learning rate, a transposed
  matrix, an off-by-one k, …) without giving the answer; a blank left as ``None`` / ``...`` gets
  "fill in the blank first".

It also returns True or False, so a solution notebook can ``assert check_…(…)``. Import the ones a lab needs::

    from gbair_nb.exercises import check_gbair_score
    check_gbair_score(score, G_train, G_M, lrs);

======================  =====================================================================================
lab                     checkers
======================  =====================================================================================
01 prompt tuning        check_prompt_tuning_params, check_soft_prompt_inputs, check_mean_pooling
02 TracIn               check_tracin_pair, check_self_influence, check_proponents_opponents
03 relabel by hand      check_review_pick, check_opposition_pick, check_journal_replay
04 G-BAIR               check_gbair_score, check_default_k, check_flagged, check_recovered_fraction
05 detectors            check_recall_at, check_precision_at_k, check_average_precision, check_auroc,
                        check_flip_rates, check_one_way_share
06 parameters           check_lora_params, check_gift_params, check_masked_adam
07 LLM verbalizer       check_verbalizer_logits, check_verbalizer_probs
======================  =====================================================================================

Importing this package imports NumPy and pandas only; a checker that needs the toolkit imports it when called.
"""
from .attribution import (check_journal_replay, check_opposition_pick, check_proponents_opponents,
                          check_review_pick, check_self_influence, check_tracin_pair)
from .core import is_blank
from .detection import (check_auroc, check_average_precision, check_default_k, check_flagged, check_flip_rates,
                        check_gbair_score, check_one_way_share, check_precision_at_k, check_recall_at,
                        check_recovered_fraction)
from .parameters import adamw_reference, check_gift_params, check_lora_params, check_masked_adam
from .prompting import (check_mean_pooling, check_prompt_tuning_params, check_soft_prompt_inputs,
                        check_verbalizer_logits, check_verbalizer_probs)

__all__ = ["is_blank", "adamw_reference",
           "check_prompt_tuning_params", "check_soft_prompt_inputs", "check_mean_pooling",
           "check_tracin_pair", "check_self_influence", "check_proponents_opponents",
           "check_review_pick", "check_opposition_pick", "check_journal_replay",
           "check_gbair_score", "check_default_k", "check_flagged", "check_recovered_fraction",
           "check_recall_at", "check_precision_at_k", "check_average_precision", "check_auroc",
           "check_flip_rates", "check_one_way_share",
           "check_lora_params", "check_gift_params", "check_masked_adam",
           "check_verbalizer_logits", "check_verbalizer_probs"]
