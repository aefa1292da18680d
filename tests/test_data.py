"""gbair_nb.data: built-in datasets, user data, seeded stratified splits, label corruption, bad input."""
import numpy as np
import pandas as pd
import pytest

from gbair_nb.data import DATASETS, Corruption, DataError, TextDataset, corrupt, load_dataset, split


# ----------------------------------------------------------------------------------------------- built-ins
def test_sms_spam_counts_and_ids(sms):
    assert len(sms) == 4862 and sms.class_names == ["ham", "spam"]
    assert sms.class_counts().tolist() == [4862 - 642, 642]
    assert np.array_equal(sms.ids, np.arange(4862))  # stable ids: the row number in the file
    again = load_dataset("sms_spam")
    assert np.array_equal(again.ids, sms.ids) and again.texts == sms.texts and again.fingerprint() == sms.fingerprint()


def test_tweets_counts_confidence_and_binary_view():
    tw = load_dataset("tweets")
    assert len(tw) == 38158 and tw.class_names == ["negative", "neutral", "positive"]
    assert tw.class_counts().tolist() == [16186, 15018, 6954]
    assert "confidence" in tw.extra.columns and len(tw.extra) == len(tw)
    tb = load_dataset("tweets_binary")
    assert len(tb) == 23140 and tb.class_names == ["negative", "positive"]
    assert tb.class_counts().tolist() == [16186, 6954]
    # the binary view keeps the ids (row numbers) of the full file, with the same texts
    pos = tw.positions(tb.ids)
    assert [tw.texts[i] for i in pos[:50]] == tb.texts[:50]
    assert np.array_equal(tw.labels[pos] == 2, tb.labels == 1)
    conf = tw.extra["confidence"].to_numpy(float)
    assert np.allclose(conf[pos], tb.extra["confidence"].to_numpy(float), equal_nan=True)
    assert np.nanmin(conf) >= 0 and np.nanmax(conf) <= 1 and np.isnan(conf).sum() == 5460


def test_dataset_methods_do_not_mutate(sms):
    small = sms.subset([0, 5, 9])
    noisy = small.with_labels([1, 1, 1])
    assert small.labels.tolist() == sms.labels[[0, 5, 9]].tolist()
    assert noisy.labels.tolist() == [1, 1, 1] and noisy.fingerprint() != small.fingerprint()
    frame = small.to_frame()
    assert list(frame.columns[:4]) == ["id", "text", "label", "label_name"] and frame["id"].tolist() == [0, 5, 9]


# --------------------------------------------------------------------------------------------------- splits
def test_split_sizes_disjoint_stratified_seeded(sms):
    s = split(sms, n_train=1000, n_val=300, n_test=500, seed=3)
    assert s.sizes() == {"train": 1000, "val": 300, "test": 500}
    ids = [set(part.ids.tolist()) for part in (s.train, s.val, s.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    share = sms.class_counts() / len(sms)
    for part in (s.train, s.val, s.test):
        assert np.all(np.abs(part.class_counts() - share * len(part)) <= 1), part.class_counts()
    again = split(sms, n_train=1000, n_val=300, n_test=500, seed=3)
    assert np.array_equal(again.train.ids, s.train.ids) and np.array_equal(again.test.ids, s.test.ids)
    other = split(sms, n_train=1000, n_val=300, n_test=500, seed=4)
    assert not np.array_equal(other.train.ids, s.train.ids)


def test_split_fractions(sms):
    s = split(sms, n_train=0.5, n_val=0.25, n_test=0.25, seed=0)
    assert sum(s.sizes().values()) <= len(sms)
    assert s.sizes() == {"train": 2431, "val": 1215, "test": 1215}
    assert sum(split(sms.subset(range(20)).with_labels([0, 1] * 10), n_train=0.6, n_val=0.2,
                     n_test=0.2).sizes().values()) == 20


# ----------------------------------------------------------------------------------------------- corruption
def _labels(n=1000, k=3, seed=0):
    return np.random.default_rng(seed).integers(0, k, size=n)


def _check_mask(c: Corruption, original: np.ndarray):
    assert np.array_equal(c.labels, original)
    assert np.array_equal(c.is_corrupted, c.noisy_labels != original)
    assert c.is_corrupted.dtype == bool


def test_uniform_exact_count_mask_and_originals_untouched():
    labels = _labels()
    before = labels.copy()
    c = corrupt(labels, p=0.2, mode="uniform", seed=1, num_classes=3)
    assert np.array_equal(labels, before)  # the input is never modified
    assert c.labels is not labels
    _check_mask(c, before)
    assert c.n_corrupted == 200 and c.summary()["fraction"] == pytest.approx(0.2)
    assert set(np.unique(c.noisy_labels)) <= {0, 1, 2}
    # every other class is reachable
    moved = {(a, b) for a, b in zip(before[c.is_corrupted], c.noisy_labels[c.is_corrupted])}
    assert len(moved) == 6


def test_class_conditional_only_source_to_target():
    labels = _labels()
    c = corrupt(labels, p=0.5, mode="class_conditional", seed=0, num_classes=3, source=2, target=0)
    _check_mask(c, labels)
    assert c.n_corrupted == round(0.5 * (labels == 2).sum())
    assert np.all(labels[c.is_corrupted] == 2) and np.all(c.noisy_labels[c.is_corrupted] == 0)
    binary = np.array([0] * 60 + [1] * 40)
    b = corrupt(binary, p=0.25, mode="class_conditional", seed=0)  # binary default: 1 → 0
    assert b.n_corrupted == 10 and np.all(binary[b.is_corrupted] == 1)
    assert np.all(b.noisy_labels[b.is_corrupted] == 0)


def test_confusable_goes_to_most_likely_wrong_class():
    labels = _labels(300, 4)
    probs = np.random.default_rng(5).dirichlet(np.ones(4), size=300)
    c = corrupt(labels, p=0.3, mode="confusable", seed=2, probs=probs)
    _check_mask(c, labels)
    assert c.n_corrupted == 90
    masked = probs.copy()
    masked[np.arange(300), labels] = -np.inf
    assert np.array_equal(c.noisy_labels[c.is_corrupted], masked.argmax(1)[c.is_corrupted])


def test_confusable_flips_the_ambiguous_examples_even_with_two_classes():
    labels = _labels(1000, 2)
    p_other = np.random.default_rng(3).beta(1, 4, size=1000)  # most examples clear, some ambiguous
    probs = np.where(labels[:, None] == np.arange(2), 1 - p_other[:, None], p_other[:, None])
    c = corrupt(labels, p=0.2, mode="confusable", seed=1, probs=probs)
    u = corrupt(labels, p=0.2, mode="uniform", seed=1)
    assert c.n_corrupted == u.n_corrupted == 200 and not np.array_equal(c.is_corrupted, u.is_corrupted)
    # flipped examples are the ambiguous ones. Picked ∝ P(other) from Beta(1, 4): their mean is the size-biased
    # E[X²]/E[X] = 1/3 (a bit less without replacement), the rest's about 0.17 — uniform picks have no such gap
    assert p_other[c.is_corrupted].mean() > 1.5 * p_other[~c.is_corrupted].mean()
    assert abs(p_other[u.is_corrupted].mean() - p_other[~u.is_corrupted].mean()) < 0.03


@pytest.mark.parametrize("mode", ["uniform", "class_conditional", "confusable"])
def test_corruption_is_seeded(mode):
    labels = _labels(500, 2)
    probs = np.random.default_rng(0).dirichlet(np.ones(2), size=500)
    a = corrupt(labels, p=0.3, mode=mode, seed=7, probs=probs)
    b = corrupt(labels, p=0.3, mode=mode, seed=7, probs=probs)
    c = corrupt(labels, p=0.3, mode=mode, seed=8, probs=probs)
    assert np.array_equal(a.noisy_labels, b.noisy_labels)
    assert not np.array_equal(a.is_corrupted, c.is_corrupted)
    assert corrupt(labels, p=0.0, mode=mode, seed=7, probs=probs).n_corrupted == 0


# ------------------------------------------------------------------------------------------------ user data
def test_csv_with_string_labels_and_extra_columns(tmp_path):
    f = tmp_path / "mine.csv"
    pd.DataFrame({"msg": ["win a prize, now", "see you at 5", "free entry", "lunch?"],
                  "y": ["spam", "ham", "spam", "ham"], "source": ["a", "b", "c", "d"]}).to_csv(f, index=False)
    ds = load_dataset(f, text_col="msg", label_col="y")
    assert ds.class_names == ["ham", "spam"] and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.texts[0] == "win a prize, now" and ds.ids.tolist() == [0, 1, 2, 3]
    assert ds.extra["source"].tolist() == ["a", "b", "c", "d"] and ds.name == "mine.csv"


def test_tsv_dataframe_and_id_column(tmp_path):
    df = pd.DataFrame({"id": [10, 20, 30], "text": ["a b", "c, d", "e"], "label": [0, 1, 1]})
    f = tmp_path / "mine.tsv"
    df.to_csv(f, sep="\t", index=False)
    ds = load_dataset(f, id_col="id")
    assert ds.ids.tolist() == [10, 20, 30] and ds.texts == ["a b", "c, d", "e"] and ds.class_names == ["0", "1"]
    ds2 = load_dataset(df, class_names=["neg", "pos"])
    assert ds2.class_names == ["neg", "pos"] and ds2.labels.tolist() == [0, 1, 1]


def test_in_memory_hf_dataset():
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_dict({"sentence": ["good", "bad", "fine", "awful"],
                                     "label": ["pos", "neg", "pos", "neg"]})
    ds = load_dataset(hf, text_col="sentence")
    assert ds.class_names == ["neg", "pos"] and ds.labels.tolist() == [1, 0, 1, 0] and len(ds) == 4


# ------------------------------------------------------------------------------------------------ bad input
def _one_error(fn, *args, match, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unknown_dataset_lists_known_ones():
    msg = _one_error(load_dataset, "imdb", match="unknown dataset 'imdb'")
    assert all(name in msg for name in DATASETS)


def test_missing_file(tmp_path):
    _one_error(load_dataset, tmp_path / "nope.csv", match="file not found")


def test_missing_column_lists_columns():
    df = pd.DataFrame({"text": ["a", "b"], "y": [0, 1]})
    msg = _one_error(load_dataset, df, match="column 'label' not found")
    assert "'y'" in msg


@pytest.mark.parametrize("bad", ["", "   ", None, 3.5])
def test_empty_or_non_string_text(bad):
    df = pd.DataFrame({"text": ["fine", bad, "ok"], "label": [0, 1, 1]})
    _one_error(load_dataset, df, match="non-empty strings; rows \\[1\\]")


def test_empty_text_in_a_csv(tmp_path):
    f = tmp_path / "gap.csv"
    f.write_text("text,label\nhello,0\n,1\nbye,1\n")
    _one_error(load_dataset, f, match="non-empty strings")


def test_single_class():
    _one_error(load_dataset, pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}), match="single class")


def test_labels_out_of_range():
    _one_error(load_dataset, pd.DataFrame({"text": ["a", "b"], "label": [0, 2]}), class_names=["a", "b"],
               match="label 2 is out of range")
    _one_error(load_dataset, pd.DataFrame({"text": ["a", "b"], "label": [-1, 1]}), match=">= 0")
    _one_error(TextDataset, [0, 1], ["a", "b"], [0, 5], ["x", "y"], match="out of range")
    _one_error(corrupt, [0, 1, 3], p=0.1, num_classes=2, match="labels must be in")


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_rate_outside_unit_interval(p):
    _one_error(corrupt, [0, 1, 0, 1], p=p, match=r"\[0, 1\)")


def test_bad_corruption_arguments():
    _one_error(corrupt, [0, 1, 2], p=0.1, mode="sideways", match="unknown corruption mode")
    _one_error(corrupt, [0, 1, 2], p=0.1, mode="class_conditional", match="source= and target=")
    _one_error(corrupt, [0, 1, 2], p=0.1, mode="confusable", match="needs probs")


def test_split_sizes_that_do_not_fit(sms):
    _one_error(split, sms, n_train=4000, n_val=500, n_test=500, match="more than the 4862 examples")
    _one_error(split, sms, n_train=0, n_val=10, n_test=10, match="n_train must be a positive count")
    tiny = sms.subset(list(np.flatnonzero(sms.labels == 0)[:40]) + list(np.flatnonzero(sms.labels == 1)[:2]))  # only 2 spam
    _one_error(split, tiny, n_train=10, n_val=5, n_test=5, match="at least 3 examples")


def test_split_tiny_dataset_that_fits():
    """7 examples (4 ham, 3 spam) into 4/1/1: fits, so it must split (the one-per-class floor used to overshoot)."""
    ds = TextDataset(np.arange(7), [f"t{i}" for i in range(7)], [0, 0, 0, 0, 1, 1, 1], ["ham", "spam"])
    s = split(ds, n_train=4, n_val=1, n_test=1, seed=3)
    assert s.sizes() == {"train": 4, "val": 1, "test": 1}
    used = np.concatenate([s.train.ids, s.val.ids, s.test.ids])
    assert len(set(used.tolist())) == 6
    assert (s.train.class_counts() >= 1).all()


# ---------------------------------------------------------------------------------- a dataset owns its data
def test_a_dataset_does_not_follow_later_edits_of_the_dataframe():
    df = pd.DataFrame({"id": [10, 20, 30, 40], "text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1],
                       "score": [0.1, 0.2, 0.3, 0.4]})
    ds = load_dataset(df, id_col="id")
    fp = ds.fingerprint()
    df.loc[0, "label"] = 1
    df.loc[0, "id"] = 99
    df.loc[0, "text"] = "changed"
    df.loc[0, "score"] = 9.0
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.ids.tolist() == [10, 20, 30, 40] and ds.texts[0] == "a"
    assert ds.extra["score"].tolist() == [0.1, 0.2, 0.3, 0.4] and ds.fingerprint() == fp


def test_a_datasets_arrays_are_read_only():
    labels = np.array([0, 1, 0, 1])
    ds = TextDataset(np.arange(4), ["a", "b", "c", "d"], labels, ["x", "y"])
    labels[0] = 1  # the caller's array is copied
    assert ds.labels[0] == 0
    with pytest.raises(ValueError, match="read-only"):
        ds.labels[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        ds.ids[0] = 7
    noisy = ds.with_labels([1, 1, 0, 1])  # the way to change labels: a new dataset
    assert noisy.labels.tolist() == [1, 1, 0, 1] and ds.labels.tolist() == [0, 1, 0, 1]
    flipped = ds.labels.copy()
    flipped[0] = 1  # a copy is the caller's to change
    assert ds.labels[0] == 0


# -------------------------------------------------------------------------------- Hugging Face datasets
def _hf():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    train = datasets.Dataset.from_dict({"sentence": ["good", "bad", "fine", "awful"], "label": [1, 0, 1, 0]},
                                       features=features)
    test = datasets.Dataset.from_dict({"sentence": ["nice", "nasty"], "label": [1, 0]}, features=features)
    return datasets, datasets.DatasetDict({"train": train, "test": test})


def test_class_label_names_are_kept():
    _, dd = _hf()
    ds = load_dataset(dd["train"], text_col="sentence")
    assert ds.class_names == ["negative", "positive"] and ds.labels.tolist() == [1, 0, 1, 0]


def test_a_dataset_dict_needs_a_split():
    datasets, dd = _hf()
    msg = _one_error(load_dataset, dd, text_col="sentence", match="split=")
    assert "'train'" in msg and "'test'" in msg
    ds = load_dataset(dd, split="test", text_col="sentence")
    assert ds.texts == ["nice", "nasty"] and ds.class_names == ["negative", "positive"]
    _one_error(load_dataset, dd, split="validation", text_col="sentence", match="'validation'.*'train'")
    one = datasets.DatasetDict({"train": dd["train"]})
    assert len(load_dataset(one, text_col="sentence")) == 4  # a single split needs no name


def test_an_iterable_dataset_is_refused_with_what_to_do():
    _, dd = _hf()
    _one_error(load_dataset, dd["train"].to_iterable_dataset(), text_col="sentence", match="IterableDataset.*take")
