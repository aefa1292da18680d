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


def test_score_frame_ranks_and_distribution_plot():
    from gbair_nb.plots import plot_score_distributions, score_frame

    y = np.array([False, False, True, False, True])
    scores = {"loss": np.array([0.1, 0.2, 0.9, 0.3, 0.8]), "random": np.array([5.0, 1.0, 2.0, 4.0, 3.0])}
    df = score_frame(scores, y)
    assert list(df.columns) == ["scorer", "example", "score", "rank", "label"] and len(df) == 10
    assert np.allclose(df.query("scorer == 'loss'")["rank"], [0, 0.25, 1, 0.5, 0.75])
    assert (df.query("scorer == 'random'")["label"] == ["correct label", "correct label", "wrong label",
                                                        "correct label", "wrong label"]).all()
    fig, ax = plt.subplots()
    assert plot_score_distributions(df, ax=ax) is ax
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    assert np.allclose(np.sort(xs), np.sort(df["rank"]))  # every example drawn at its rank
    assert "rank" in ax.get_xlabel() and ax.get_ylabel() == "scorer"
    with pytest.raises(ValueError, match="shape"):
        score_frame({"x": np.zeros(3)}, y)


def test_binned_scores_frame_and_plot():
    from gbair_nb.plots import binned_scores, plot_binned_scores

    conf = np.array([0.3, 0.5, 0.7, 1.0, 1.0, np.nan])
    s = {"loss": np.array([5.0, 4.0, 3.0, 1.0, 2.0, 9.0])}
    df = binned_scores(conf, s, bins=[0, 0.6, 0.99, 1.0])
    assert df["bin"].tolist() == ["(0, 0.6]", "(0.6, 0.99]", "(0.99, 1]"] and df["n"].tolist() == [2, 1, 2]
    # ranks over the 5 kept rows: 1.0, 0.75, 0.5, 0, 0.25
    assert np.allclose(df["mean_rank"], [0.875, 0.5, 0.125])
    ax = plot_binned_scores(df)
    line = ax.get_lines()[0]
    assert np.allclose(line.get_xdata(), [0, 1, 2]) and np.allclose(line.get_ydata(), [0.875, 0.5, 0.125])
    assert ax.get_ylabel().startswith("mean suspicion rank") and "confidence" in ax.get_xlabel()


def test_influence_heatmap_frame_and_plot():
    from gbair_nb.plots import influence_heatmap_frame, plot_influence_heatmap

    scores = np.array([[0.5, -0.25, 0.0], [-1.0, 0.1, 0.2]])
    df = influence_heatmap_frame(scores, ["t0", "t1"], ["a", "b", "c"])
    assert df.shape == (2, 3) and df.loc["t1", "a"] == -1.0 and df.index.name == "test example"
    fig, ax = plt.subplots()
    assert plot_influence_heatmap(df, ax=ax, title="x") is ax
    mesh = ax.collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(2, 3), scores)
    assert mesh.norm.vmin == -1.0 and mesh.norm.vmax == 1.0  # symmetric around 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="shape"):
        influence_heatmap_frame(scores, ["t0"], ["a", "b", "c"])


def test_self_influence_frame_and_distribution_plot():
    from gbair_nb.plots import plot_self_influence, self_influence_frame

    rng = np.random.default_rng(0)
    y = np.arange(60) < 12
    s = np.where(y, 10.0, 1.0) * rng.lognormal(size=60)
    df = self_influence_frame(s, y)
    assert list(df.columns) == ["example", "self_influence", "label"]
    assert (df["label"] == "wrong label").sum() == 12 and np.allclose(df["self_influence"], s)
    ax = plot_self_influence(df)
    assert ax.get_xscale() == "log" and "self-influence" in ax.get_xlabel() and len(ax.patches + ax.collections)
    with pytest.raises(ValueError, match="same shape"):
        self_influence_frame(s[:5], y)


def test_inspection_curve_matches_detection_metrics_and_plots_references():
    from gbair_nb.plots import inspection_curve, plot_inspection_curve
    from gbair_nb.metrics import detection_metrics

    y = np.zeros(50, dtype=bool)
    y[[0, 1, 2, 30, 40]] = True
    s = -np.arange(50.0)  # examples 0, 1, 2 first: three of five wrong labels in the top 6%
    df = inspection_curve(s, y)
    assert list(df.columns) == ["fraction", "recall", "random", "perfect"] and len(df) == 101
    assert df["recall"].iloc[0] == 0 and df["recall"].iloc[-1] == 1 and df["recall"].is_monotonic_increasing
    m = detection_metrics(s, y)
    assert df.set_index("fraction").loc[0.1, "recall"] == m["recall@10%"]
    assert df.set_index("fraction").loc[0.06, "recall"] == pytest.approx(0.6)
    assert df.set_index("fraction").loc[0.1, "perfect"] == 1.0 and df.set_index("fraction").loc[0.5, "random"] == 0.5
    fig, ax = plt.subplots()
    assert plot_inspection_curve(df, ax=ax) is ax
    assert len(ax.get_lines()) == 3 and "recall" in ax.get_ylabel()
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), df["recall"])
