"""Plots for the notebooks and the CLI: compute a DataFrame first, draw it second.

Every ``plot_*`` function takes a tidy DataFrame (built by the matching helper here, in :mod:`gbair_nb.report`
(``curve_frame``) or :mod:`gbair_nb.explain` (``influence_bars_frame``), or by you), draws on ``ax`` (a new figure
only when ``ax`` is None) and returns the Axes. Nothing calls ``plt.show()``: the notebook shows the figure, a test
reads the numbers back. One module per subject: ``data``, ``detection``, ``influence``, ``recovery``.
"""
from .data import class_counts, plot_class_counts, plot_metric_curve, plot_training, training_frame
from .detection import (binned_scores, inspection_curve, plot_binned_scores, plot_detector_matrix,
                        plot_inspection_curve, plot_score_distributions, score_frame)
from .influence import (influence_heatmap_frame, plot_influence_bars, plot_influence_heatmap, plot_self_influence,
                        self_influence_frame)
from .recovery import plot_recovery_curves

__all__ = ["class_counts", "plot_class_counts", "plot_metric_curve", "plot_training", "training_frame",
           "binned_scores", "inspection_curve", "plot_detector_matrix", "plot_binned_scores", "plot_inspection_curve",
           "plot_score_distributions", "score_frame", "influence_heatmap_frame", "plot_influence_bars",
           "plot_influence_heatmap", "plot_self_influence", "self_influence_frame", "plot_recovery_curves"]
