"""gbair_nb.plots: the numbers drawn are the numbers in the frame; plots draw on the Axes given."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gbair_nb.data import corrupt  # noqa: E402
from gbair_nb.plots import class_counts, plot_class_counts, plot_metric_curve, plot_training, training_frame  # noqa


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_class_counts_frame_and_bars():
    labels = np.array([0] * 80 + [1] * 20)
    c = corrupt(labels, p=0.5, mode="class_conditional", seed=0)
    df = class_counts({"original": labels, "noisy": c.noisy_labels}, ["ham", "spam"])
    assert df.to_dict("records") == [
        {"labels": "original", "class": "ham", "count": 80}, {"labels": "original", "class": "spam", "count": 20},
        {"labels": "noisy", "class": "ham", "count": 90}, {"labels": "noisy", "class": "spam", "count": 10}]
    fig, ax = plt.subplots()
    n_figs = len(plt.get_fignums())
    assert plot_class_counts(df, ax=ax) is ax and len(plt.get_fignums()) == n_figs
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    assert heights == [10, 20, 80, 90]
    assert ax.get_ylabel() and ax.get_xlabel() == "class"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["original", "noisy"]


def test_metric_curve_plots_the_frame():
    df = pd.DataFrame({"p": [0.3, 0.0, 0.1], "accuracy": [0.7, 0.9, 0.85], "macro_f1": [0.6, 0.88, 0.8]})
    ax = plot_metric_curve(df, references={"majority class": 0.5})
    lines = ax.get_lines()
    assert np.allclose(lines[0].get_xdata(), [0.0, 0.1, 0.3]) and np.allclose(lines[0].get_ydata(), [0.9, 0.85, 0.7])
    assert np.allclose(lines[1].get_ydata(), [0.88, 0.8, 0.6])
    assert np.allclose(lines[2].get_ydata(), [0.5, 0.5])  # the reference line
    assert "corruption rate" in ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["accuracy", "macro-F1", "majority class"]


def test_training_plot_from_a_run_record():
    record = {"epochs": [{"epoch": 1, "train_loss": 0.6, "val_macro_f1": 0.5},
                         {"epoch": 2, "train_loss": 0.4, "val_macro_f1": 0.8}]}
    df = training_frame(record)
    fig, ax = plt.subplots()
    plot_training(df, ax=ax)
    assert np.allclose(ax.get_lines()[0].get_ydata(), [0.6, 0.4])
    twin = [a for a in fig.axes if a is not ax][0]
    assert np.allclose(twin.get_lines()[0].get_ydata(), [0.5, 0.8]) and twin.get_ylabel() == "validation macro-F1"
