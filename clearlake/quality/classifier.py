"""Gaussian Naive Bayes image-quality classifier, persisted as plain JSON.

The model is a scikit-learn ``Pipeline``: a signed log transform
(``sign(x)·ln(1+|x|)``: energies span decades, NB wants near-Gaussian
features), ``StandardScaler``, then ``GaussianNB``. It is persisted as JSON of
its fitted parameters only — never pickle or joblib, so a model read from a
shared repository cannot run code — and predictions are computed from those
parameters with the same formulas (see :meth:`Model.predict_proba`).

**Classes.** The labels come from the training data (``good``, ``blurry``,
``moire`` by default; more can be added). Naive Bayes may be trained on finer
*sub-labels* (one per kind of degradation: ``blurry_motion``,
``moire_screen``, …), which suits it better than one class per label: a
class made of several unlike kinds is far from one Gaussian. The collapse
rule is explicit, not a naming convention: every training image has a label
and a sub-label, each sub-label must belong to exactly one label, and that
map is stored in the model. A prediction's probability for a label is the
sum of its sub-labels' probabilities; the predicted label is the most
probable label (ties: first in sorted order).

**Features.** :data:`DEFAULT_FEATURES`, a subset of
:data:`~clearlake.quality.metrics.METRIC_NAMES`, chosen by ablation on two
sample sets (``clearlake sample-data`` seeds 0 and 1, 336 images each from 14
source photographs; macro-F1 with one source photograph held out per fold):

==================================  ======  ======
features                            seed 0  seed 1
==================================  ======  ======
seed's 4, three classes             0.663   0.647
seed's 4, sub-labels                0.665   0.616
all 8 metrics, sub-labels           0.940   0.934
**default 5, sub-labels**           0.958   0.970
default 5, three classes            0.938   0.944
default − laplacian variance        0.946   0.964
default − edge width                0.950   0.952
default − spectral slope            0.950   0.961
default − luma peak                 0.863   0.867
default − chroma peak               0.891   0.902
default + Sobel y variance          0.950   0.964
default + FFT high-frequency        0.941   0.940
==================================  ======  ======

The seed's Sobel and FFT measures are still computed (they are reported and
cached) but left out of the model: they measure the same energy as the
Laplacian variance, and Naive Bayes counts correlated evidence twice. Tried
and dropped for lack of gain: re-blur ratio, fine/coarse Laplacian ratio,
high-frequency ratio and angular anisotropy of the spectrum, edge width in
the widest direction, tiled luma peaks, a whole-picture chroma peak, and the
chroma/luma gradient-energy ratio (all within ±0.01 or worse).

On an independent generator written only to probe generalisation (box blur,
blur by upscaling, crossed line screens, aliased fine textures, an RGB mask
area-downscaled by non-integer factors; PNG or JPEG quality 70–100; 210
images), the default model scores macro-F1 0.966.

**Model file.** ``format``, ``created_at``, ``metrics`` (``{name: version}`` of
each feature: the metric versions it was trained on), ``metric_set_version`` (the
id of those), ``features``, ``transform``, ``scaler`` (mean, scale), ``nb`` (classes,
theta, var, class_prior), ``labels``, ``collapse`` (sub-label → label),
``training_set`` (SHA-256 fingerprint of the sorted ``checksum,label`` lines,
counts) and ``cross_validation`` (scores from folds grouped by source
photograph). :attr:`Model.id` hashes everything but ``created_at``, so the
same training data and code give the same id. A model from before metrics had
versions of their own names only ``metric_set_version``; one of
:data:`~clearlake.quality.registry.LEGACY_METRIC_SETS` is read as the versions
listed there, any other is refused (retrain it).

A model is usable by a run that computes every metric it names at that version
(:meth:`Model.check`); otherwise :class:`MissingMetricError` says which is missing.

**Regenerating the packaged model** (after a change to a metric it reads, or to
its features)::

    clearlake sample-data /tmp/sample --seed 0
    clearlake train /tmp/sample/labels.csv --images /tmp/sample \
        --out clearlake/quality/default_model.json
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from clearlake.quality.registry import LEGACY_METRIC_SETS, MetricSet, available, builtin_metrics

Key = TypeVar("Key", bound=Hashable)  # what `predict_each` labels: a path, an index

FORMAT = "clearlake-nb/1"
TRANSFORM = "signed_log1p"
DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model.json")
DEFAULT_FEATURES: tuple[str, ...] = (
    "laplacian_var_score",
    "edge_width_score",
    "spectral_slope_score",
    "luma_peak_score",
    "chroma_peak_score",
)
#: GaussianNB's var_smoothing (a fraction of the largest feature variance).
VAR_SMOOTHING = 1e-9
_REQUIRED = (
    "format",
    "metric_set_version",
    "features",
    "transform",
    "scaler",
    "nb",
    "labels",
    "collapse",
    "training_set",
    "cross_validation",
)


class ModelError(Exception):
    """A model file that cannot be used: not JSON, incomplete, or for other metrics."""


class MissingMetricError(ModelError):
    """A model reads a metric (name at a version) that the run cannot compute.

    Attributes:
        missing: {name: version} the model needs and the run lacks.
    """

    def __init__(self, message: str, missing: dict[str, str]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Prediction:
    """One image's class: the most probable label and the probability of each label."""

    label: str
    probabilities: dict[str, float]


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x)·ln(1+|x|)``: compresses decades of energy, keeps sign and order."""
    return np.sign(x) * np.log1p(np.abs(x))


def make_pipeline() -> Any:
    """The unfitted scikit-learn pipeline: signed log → StandardScaler → GaussianNB."""
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return Pipeline(
        [
            ("log", FunctionTransformer(signed_log1p)),
            ("scale", StandardScaler()),
            ("nb", GaussianNB(var_smoothing=VAR_SMOOTHING)),
        ]
    )


class Model:
    """A fitted classifier, as the parameters of its JSON file."""

    def __init__(self, data: Mapping[str, Any], *, check_version: bool = True) -> None:
        """Validate and wrap a parsed model document.

        Args:
            data: the parsed JSON object.
            check_version: refuse a model whose metric set differs from the code's.

        Raises:
            ModelError: when a field is missing or malformed, or a built-in metric it
                reads is of another version than this code's.
        """
        self._data = dict(data)
        _validate(self._data, check_version)
        self._metrics = _metric_versions(self._data)
        if check_version:  # built-ins are known now; other metrics when a run has them
            builtin = builtin_metrics()
            self.check(builtin, only=[n for n in self._metrics if n in builtin])
        nb = self._data["nb"]
        self._features: tuple[str, ...] = tuple(self._data["features"])
        self._mean = np.asarray(self._data["scaler"]["mean"], dtype=np.float64)
        self._scale = np.asarray(self._data["scaler"]["scale"], dtype=np.float64)
        self._sub_classes: tuple[str, ...] = tuple(nb["classes"])
        self._theta = np.asarray(nb["theta"], dtype=np.float64)
        self._var = np.asarray(nb["var"], dtype=np.float64)
        self._log_prior = np.log(np.asarray(nb["class_prior"], dtype=np.float64))
        self._labels: tuple[str, ...] = tuple(self._data["labels"])
        collapse = self._data["collapse"]
        self._collapse = np.array([self._labels.index(collapse[c]) for c in self._sub_classes])

    # --- persistence ------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> Model:
        """Read a model file (default: the packaged ``default_model.json``).

        Args:
            path: the JSON model; None for the packaged default.

        Raises:
            ModelError: when the file is not a usable JSON model (a pickle is refused
                without being read further), or was made for another metric set.
        """
        p = DEFAULT_MODEL_PATH if path is None else Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model {p}: {exc.strerror or exc}") from exc
        return cls.from_bytes(data, source=str(p))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "model") -> Model:
        """Parse a model from raw bytes, refusing anything that is not JSON."""
        if _looks_like_pickle(data):
            raise ModelError(
                f"{source} is a Python pickle/joblib file, not a JSON model; refusing to load it "
                "(unpickling can run arbitrary code). Retrain with `clearlake train`."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError(f"{source} is not a JSON model (not UTF-8 text)") from exc
        return cls.from_json(text, source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model", check_version: bool = True) -> Model:
        """Parse a model from its JSON text.

        Args:
            text: the JSON document.
            source: name used in error messages.
            check_version: refuse a model made for another metric set.

        Raises:
            ModelError: when the text is not a valid model.
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ModelError(f"{source} is not a JSON model: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{source} is not a JSON model: the top level is not an object")
        return cls(data, check_version=check_version)

    def to_json(self) -> str:
        """The model as indented, key-sorted JSON text."""
        return json.dumps(self._data, indent=1, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the model's JSON to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    # --- properties -------------------------------------------------------------------

    @property
    def id(self) -> str:
        """``nb-`` + 12 hex of the SHA-256 of the canonical JSON (``created_at`` excluded)."""
        content = {k: v for k, v in self._data.items() if k != "created_at"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return "nb-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def classes(self) -> tuple[str, ...]:
        """The top-level labels the model predicts, sorted."""
        return self._labels

    @property
    def sub_classes(self) -> tuple[str, ...]:
        """The classes Naive Bayes was fitted on (sub-labels, or the labels themselves)."""
        return self._sub_classes

    @property
    def features(self) -> tuple[str, ...]:
        """The metric names the model reads, in order."""
        return self._features

    @property
    def metric_set_version(self) -> str:
        """The id of the metric versions the model was trained on."""
        return str(self._data["metric_set_version"])

    @property
    def metrics(self) -> dict[str, str]:
        """``{name: version}`` of every metric the model reads."""
        return dict(self._metrics)

    def check(self, metric_set: MetricSet, *, only: Sequence[str] | None = None) -> None:
        """Make sure `metric_set` computes every metric this model reads, at its version.

        Args:
            metric_set: the metrics a run computes.
            only: check only these of the model's metrics.

        Raises:
            MissingMetricError: naming each metric missing or of another version.
        """
        wanted = {n: v for n, v in self._metrics.items() if only is None or n in only}
        missing = {n: v for n, v in wanted.items()
                   if n not in metric_set or metric_set[n].version != v}
        if not missing:
            return
        lines = []
        for name, version in sorted(missing.items()):
            have = "it has no such metric"
            if name in metric_set:
                have = f"it computes version {metric_set[name].version} ({metric_set[name].source})"
            lines.append(f"{name} version {version}: {have}")
        raise MissingMetricError(
            f"model {self.id} reads metrics this run cannot compute as it was trained — "
            + "; ".join(lines)
            + f". Available: {', '.join(metric_set.names) or 'none'}. Retrain the model on "
            "today's metrics (`clearlake train … --features …`), or make those versions "
            "available (install the plugin; pin the scripts commit it was trained with).",
            missing)

    @property
    def info(self) -> dict[str, Any]:
        """The model document without its fitted arrays (for display)."""
        return {k: v for k, v in self._data.items() if k not in ("scaler", "nb")}

    # --- prediction -------------------------------------------------------------------

    def matrix(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The feature matrix of ``rows`` in the model's feature order.

        Raises:
            ModelError: when a row lacks a feature the model needs.
        """
        x = np.empty((len(rows), len(self._features)), dtype=np.float64)
        for i, row in enumerate(rows):
            try:
                x[i] = [float(row[f]) for f in self._features]
            except KeyError as exc:
                raise ModelError(f"row {i} has no metric {exc.args[0]!r} the model needs") from exc
        return x

    def predict_proba(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Probabilities over :attr:`classes` (rows × labels), summing to 1 per row.

        ``z = (signed_log1p(x) − mean) / scale``; for each sub-class c,
        ``ln p(c|z) ∝ ln prior_c − ½ Σ_j [ln(2π var_cj) + (z_j − θ_cj)² / var_cj]``
        (GaussianNB's joint log-likelihood), normalised with log-sum-exp; a
        label's probability is the sum over its sub-classes.
        """
        if len(rows) == 0:
            return np.zeros((0, len(self._labels)))
        z = (signed_log1p(self.matrix(rows)) - self._mean) / self._scale
        jll = self._log_prior[None, :] - 0.5 * (
            np.log(2.0 * np.pi * self._var).sum(axis=1)[None, :]
            + (((z[:, None, :] - self._theta[None, :, :]) ** 2) / self._var[None, :, :]).sum(axis=2)
        )
        jll -= jll.max(axis=1, keepdims=True)
        sub = np.exp(jll)
        sub /= sub.sum(axis=1, keepdims=True)
        out = np.zeros((len(rows), len(self._labels)))
        np.add.at(out.T, self._collapse, sub.T)
        return out

    def predict(self, rows: Sequence[Mapping[str, float]]) -> list[Prediction]:
        """Classify metric rows (each a mapping that contains the model's features)."""
        proba = self.predict_proba(rows)
        return [
            Prediction(
                label=self._labels[int(np.argmax(p))],
                probabilities={c: float(v) for c, v in zip(self._labels, p, strict=True)},
            )
            for p in proba
        ]


def predict_each(model: Any, rows: Mapping[Key, Mapping[str, float]]) -> dict[Key, Prediction]:
    """Classify keyed metric rows (a path or an index each) in one model call:
    {key: prediction}. `model` is anything with `predict` (a `Model`, a test's stand-in)."""
    return dict(zip(rows, model.predict(list(rows.values())), strict=True))


# --- training ----------------------------------------------------------------------------


def train(
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    sublabels: Sequence[str] | None = None,
    checksums: Sequence[str] | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    folds: int = 0,
    metric_set: MetricSet | None = None,
) -> Model:
    """Fit the pipeline on all rows and cross-validate it by source group.

    Args:
        rows: metric rows (as from :func:`clearlake.quality.metrics.measure`).
        labels: top-level label of each row (good, blurry, moire, …).
        groups: source photograph of each row; folds never split a group.
        sublabels: finer class of each row, fitted by Naive Bayes and collapsed into
            ``labels`` (default: the labels themselves).
        checksums: content checksum of each image, for the training-set fingerprint
            (default: a hash of the row's feature values).
        features: metric names the model reads (any subset of `metric_set`).
        folds: number of cross-validation folds; 0 = one per source (leave one out).
        metric_set: the metrics the rows were computed with, whose versions the model
            records (default: `registry.available()`).

    Returns:
        The fitted model, with its cross-validated scores.

    Raises:
        ValueError: on inconsistent inputs (lengths, a sub-label under two labels,
            fewer than two labels, unknown features).
    """
    n = len(rows)
    subs = list(labels) if sublabels is None else list(sublabels)
    if not (len(labels) == len(groups) == len(subs) == n) or n == 0:
        raise ValueError("rows, labels, groups (and sublabels) must be non-empty and equally long")
    metric_set = metric_set if metric_set is not None else available()
    unknown = [f for f in features if f not in metric_set]
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {list(metric_set.names)}")
    used = metric_set.select(features)
    collapse = _collapse_map(subs, labels)
    if len(set(labels)) < 2:
        raise ValueError("training needs at least two labels")
    features = tuple(features)
    x = _matrix(rows, features)
    pipe = make_pipeline().fit(x, np.asarray(subs))
    cv = cross_validate(rows, labels, groups, sublabels=subs, features=features, folds=folds)
    if checksums is None:
        checksums = [hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest() for r in x]
    lines = sorted(f"{c},{lab}" for c, lab in zip(checksums, labels, strict=True))
    scaler, nb = pipe.named_steps["scale"], pipe.named_steps["nb"]
    data = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metric_set_version": used.id,
        "metrics": used.versions,
        "features": list(features),
        "transform": TRANSFORM,
        "scaler": {"mean": _floats(scaler.mean_), "scale": _floats(scaler.scale_)},
        "nb": {
            "classes": [str(c) for c in nb.classes_],
            "theta": [_floats(r) for r in nb.theta_],
            "var": [_floats(r) for r in nb.var_],
            "class_prior": _floats(nb.class_prior_),
            "var_smoothing": VAR_SMOOTHING,
        },
        "labels": sorted(set(labels)),
        "collapse": dict(sorted(collapse.items())),
        "training_set": {
            "fingerprint": "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest(),
            "images": n,
            "sources": len(set(groups)),
            "label_counts": dict(sorted(Counter(labels).items())),
            "sublabel_counts": dict(sorted(Counter(subs).items())),
        },
        "cross_validation": cv.summary(),
    }
    return Model(data)


@dataclass(frozen=True)
class Evaluation:
    """Predictions against the truth, with the usual scores."""

    classes: tuple[str, ...]
    truth: tuple[str, ...]
    predicted: tuple[str, ...]
    split: str

    @property
    def confusion(self) -> np.ndarray:
        """Confusion matrix: rows = true class, columns = predicted, in :attr:`classes` order."""
        index = {c: i for i, c in enumerate(self.classes)}
        m = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)
        for t, p in zip(self.truth, self.predicted, strict=True):
            m[index[t], index[p]] += 1
        return m

    def per_class(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1 and support of each class (0 where undefined)."""
        m = self.confusion
        out = {}
        for i, c in enumerate(self.classes):
            tp, predicted, actual = m[i, i], m[:, i].sum(), m[i, :].sum()
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out[c] = {
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
                "support": int(actual),
            }
        return out

    @property
    def macro_f1(self) -> float:
        """Unweighted mean F1 over the classes present in the truth."""
        scores = [v["f1"] for v in self.per_class().values() if v["support"] > 0]
        return float(np.mean(scores)) if scores else 0.0

    @property
    def accuracy(self) -> float:
        """Fraction predicted right."""
        right = sum(t == p for t, p in zip(self.truth, self.predicted, strict=True))
        return right / len(self.truth) if self.truth else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready scores (stored in the model)."""
        return {
            "split": self.split,
            "images": len(self.truth),
            "macro_f1": round(self.macro_f1, 4),
            "accuracy": round(self.accuracy, 4),
            "per_class": {
                c: {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}
                for c, s in self.per_class().items()
            },
            "confusion": {
                "classes": list(self.classes),
                "matrix": self.confusion.tolist(),
            },
        }


def cross_validate(
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    sublabels: Sequence[str] | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    folds: int = 0,
) -> Evaluation:
    """Out-of-fold predictions with folds grouped by source (a source is never split).

    Each fold fits the same pipeline on the other sources and predicts the held-out
    ones with the same collapse rule as :meth:`Model.predict`.

    Args:
        rows: metric rows.
        labels: top-level labels.
        groups: source photograph of each row.
        sublabels: classes to fit (default: the labels).
        features: metric names to use.
        folds: number of folds; 0 = one per source (leave one source out).

    Returns:
        The evaluation over all rows.
    """
    from sklearn.model_selection import GroupKFold

    subs = np.asarray(list(labels) if sublabels is None else list(sublabels))
    y = np.asarray(labels)
    g = np.asarray(groups)
    collapse = _collapse_map(list(subs), list(labels))
    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError("cross-validation needs at least two source groups")
    k = n_groups if folds <= 0 else min(folds, n_groups)
    x = _matrix(rows, tuple(features))
    classes = tuple(sorted(set(labels)))
    predicted = np.empty(len(y), dtype=object)
    for train_idx, test_idx in GroupKFold(n_splits=k).split(x, y, g):
        pipe = make_pipeline().fit(x[train_idx], subs[train_idx])
        sub_proba = pipe.predict_proba(x[test_idx])
        proba = np.zeros((len(test_idx), len(classes)))
        for j, c in enumerate(pipe.classes_):
            proba[:, classes.index(collapse[str(c)])] += sub_proba[:, j]
        predicted[test_idx] = [classes[int(i)] for i in proba.argmax(axis=1)]
    split = (
        "leave one source photograph out"
        if k == n_groups
        else f"GroupKFold({k}) by source photograph"
    )
    return Evaluation(
        classes, tuple(y.tolist()), tuple(predicted.tolist()), f"{split} ({n_groups} sources)"
    )


def evaluate_model(
    model: Model, rows: Sequence[Mapping[str, float]], labels: Sequence[str]
) -> Evaluation:
    """A given model's predictions on labelled rows (no refitting).

    Labels the model does not know count as errors (they appear in the matrix).
    """
    predicted = tuple(p.label for p in model.predict(rows))
    classes = tuple(sorted(set(model.classes) | set(labels)))
    return Evaluation(classes, tuple(labels), predicted, f"model {model.id} on the given set")


# --- helpers -----------------------------------------------------------------------------


def _collapse_map(subs: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    collapse: dict[str, str] = {}
    for s, lab in zip(subs, labels, strict=True):
        if collapse.setdefault(s, lab) != lab:
            raise ValueError(f"sub-label {s!r} appears under two labels: {collapse[s]!r}, {lab!r}")
    return collapse


def _matrix(rows: Sequence[Mapping[str, float]], features: tuple[str, ...]) -> np.ndarray:
    try:
        x = np.array([[float(r[f]) for f in features] for r in rows], dtype=np.float64)
    except KeyError as exc:
        raise ValueError(f"a row has no metric {exc.args[0]!r}") from exc
    if not np.isfinite(x).all():
        raise ValueError("metric rows contain non-finite values")
    return x


def _floats(a: Any) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _looks_like_pickle(data: bytes) -> bool:
    """Pickle protocol ≥ 2 (and plain joblib) start with PROTO 0x80; compressed joblib
    with a zlib header. Anything else that is not JSON fails to parse as JSON."""
    return data[:1] == b"\x80" or data[:2] in (b"x\x01", b"x^", b"x\x9c", b"x\xda")


def _metric_versions(data: dict[str, Any]) -> dict[str, str]:
    """{name: version} of the features a (validated) model document reads."""
    if "metrics" in data:
        return {f: data["metrics"][f] for f in data["features"]}
    legacy = LEGACY_METRIC_SETS[data["metric_set_version"]]
    return {f: legacy[f] for f in data["features"]}


def _validate(data: dict[str, Any], check_version: bool) -> None:
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelError(f"model is missing field(s): {', '.join(missing)}")
    if data["format"] != FORMAT:
        raise ModelError(f"unknown model format {data['format']!r} (expected {FORMAT!r})")
    if "metrics" not in data and data["metric_set_version"] not in LEGACY_METRIC_SETS:
        raise ModelError(
            f"model was trained on metric set {data['metric_set_version']!r}, from before "
            "metrics had versions of their own, whose values today's metrics do not "
            f"reproduce (that is only {', '.join(LEGACY_METRIC_SETS)}); the model must be "
            "retrained (`clearlake train`) with the current metrics"
        )
    if data["transform"] != TRANSFORM:
        raise ModelError(f"unknown feature transform {data['transform']!r}")
    features = data["features"]
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) for f in features)
    ):
        raise ModelError("model field 'features' must be a non-empty list of metric names")
    versions = data.get("metrics", LEGACY_METRIC_SETS.get(data["metric_set_version"]))
    if not isinstance(versions, dict) or not all(
            isinstance(versions.get(f), str) for f in features):
        raise ModelError("model field 'metrics' must give the version of every feature")
    try:
        mean = np.asarray(data["scaler"]["mean"], dtype=np.float64)
        scale = np.asarray(data["scaler"]["scale"], dtype=np.float64)
        nb = data["nb"]
        classes = list(nb["classes"])
        theta = np.asarray(nb["theta"], dtype=np.float64)
        var = np.asarray(nb["var"], dtype=np.float64)
        prior = np.asarray(nb["class_prior"], dtype=np.float64)
        labels = list(data["labels"])
        collapse = dict(data["collapse"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model parameters are malformed: {exc}") from exc
    k, f = len(classes), len(features)
    shapes_ok = (
        mean.shape == scale.shape == (f,)
        and theta.shape == var.shape == (k, f)
        and prior.shape == (k,)
        and k >= 1
    )
    if not shapes_ok:
        raise ModelError("model parameters have inconsistent shapes")
    finite = all(np.isfinite(a).all() for a in (mean, scale, theta, var, prior))
    if not finite or (scale <= 0).any() or (var <= 0).any() or (prior <= 0).any():
        raise ModelError("model parameters must be finite, with positive scale, var and prior")
    if not math.isclose(float(prior.sum()), 1.0, abs_tol=1e-6):
        raise ModelError("model class priors do not sum to 1")
    if any(collapse.get(c) not in labels for c in classes):
        raise ModelError("model 'collapse' must map every NB class to one of its labels")
