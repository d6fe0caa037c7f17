"""Image-quality classifier (logistic regression or Gaussian naive Bayes), as plain JSON.

The model is a scikit-learn ``Pipeline``: a signed log transform
(``sign(x)·ln(1+|x|)``: energies span decades), ``StandardScaler``, then the
classifier — by default an L2-penalised multinomial logistic regression
(``C`` = :data:`LOGISTIC_C`), or ``GaussianNB`` (``kind="naive_bayes"``, the
models made before). It is persisted as JSON of its fitted parameters only —
never pickle or joblib, so a model read from a shared repository cannot run
code — and predictions are computed from those parameters with the same
formulas (see :meth:`Model.predict_proba`).

**Classes.** The labels come from the training data (``good``, ``blurry``,
``moire`` by default; more can be added). The classifier may be trained on
finer *sub-labels* (one per kind of degradation: ``blurry_motion``,
``moire_screen``, …): a class made of several unlike kinds is neither one
Gaussian nor on one side of one hyperplane. The collapse rule is explicit,
not a naming convention: every training image has a label and a sub-label,
each sub-label must belong to exactly one label, and that map is stored in
the model. A prediction's probability for a label is the sum of its
sub-labels' probabilities; the predicted label is the most probable label
(ties: first in sorted order).

**Features and classifier**, chosen on the four sample sets the packaged model
was trained on until generator ``d`` joined them (below) (``clearlake sample-data``
generators ``a`` and ``b``, seeds 0 and 1: 1,920 images of 20 source photographs,
six of them smooth content), every
score with whole source photographs held out (all their variants, under both
generators): macro-F1 over all four sets (one photograph per fold), trained on
generator ``a`` and tested on ``b`` (``a→b``) and the reverse (``b→a``; ten
folds of photographs), and the good-image recall on smooth content (moon,
retina, microscopy, handwriting, a page; "all" split):

=============================================  =====  =====  =====  ======
features, classifier                           all    a→b    b→a    smooth
=============================================  =====  =====  =====  ======
previous default (5 features), naive Bayes     0.864  0.851  0.775  0.27
previous 5, logistic (C = 1)                   0.871  0.869  0.817  0.42
7 (default 6 + tiled fine peak), naive Bayes   0.894  0.867  0.795  0.47
7, logistic (C = 0.1)                          0.904  0.891  0.793  0.64
7, logistic (C = 1)                            0.908  0.884  0.821  0.62
7, logistic (C = 1), three classes             0.891  0.872  0.805  0.60
default 6 before, logistic (C = 1)             0.911  0.889  0.831  0.65
default 6, logistic (C = 0.3)                  0.907  0.892  0.811  0.64
default 6, logistic (C = 3)                    0.910  0.885  0.841  0.64
all 12 metrics then built in, logistic (C = 1) 0.890  0.863  0.808  0.48
default 6 before, C = 1, measured again        0.910  0.896  0.830  0.65
**default 7 (6 + peak amplitude), C = 1**      0.911  0.893  0.829  0.66
=============================================  =====  =====  =====  ======

(The rows above the last two were measured when the six were chosen; the last two with
``clearlake evaluate`` at this version, on the same four sets.) On generator
``c``, written apart from both and never trained on (``a``+``b`` → ``c``), the default 7
score 0.846 and the 6 before them 0.831: the peak amplitude separates a faint regular
texture (paper grain; the handwriting photograph's) from moiré one sees. Tried with it
and dropped (no gain in any split, or a loss from ``a`` to ``b``): a downscale–upscale
self-comparison (the energy ``I − up(down₂ I)`` against the next octave's), the
Crété-Roffet re-blur ratio, the gradient kept at the strongest edges after a σ = 1
re-blur, the sharpest-tile fine-to-mid energy ratio, an Immerkær noise estimate, luma
peaks above 0.1 cycles/px only, and the peak's share of the image's variance; and, on
the default features, a quadratic-feature logistic regression, a random forest and a
small MLP (all three worse on smooth content).

Tried since and dropped, on six splits (the leave-one-photograph-out above, ``a→b``,
``b→a``, ``a``+``b``→``c``, ``a``+``c``→``b``, ``b``+``c``→``a``; the default 7 score
0.911 / 0.893 / 0.829 / 0.846 / 0.889 / 0.849, mean 0.870, worst 0.829, good recall on
smooth content 0.63 on average): the kurtosis of the Laplacian (``ln E[L⁴] − 2 ln
E[L²]``: a blur makes it less sparse) 0.910 / 0.872 / 0.841 / 0.864 / 0.880 / 0.857,
mean 0.871, smooth 0.67 — the best candidate, but ``a→b`` loses 0.021 (``b``'s soft
frames taken for blur; its gain is within the noise of 20 photographs, and ``C`` = 0.3
would look better only by choosing it on these very splits); the same kurtosis on the
sharpest 64-px tile, after a 3×3 median, or as native minus half-size; the sparsity of
the gradient magnitude (``ln E[m²] − 2 ln E[m]``, mean 0.868); the Crété-Roffet blur
effect again, taking its weaker direction (mean 0.865, ``b→a`` 0.817); the sharpest-edge
width after a 3×3 median; the Immerkær noise level (every split worse); ``|knee|`` and
its two signed halves (blur takes the knee away from 0 either way; every split worse);
and, on the default 7, a quadratic logistic regression (``C`` 0.01–1: ``b→a``
0.758–0.772), gradient-boosted trees (depth 3, 100 rounds: leave-one-out 0.887, ``b→a``
0.762) and a 16-unit MLP (``α`` = 10: ``a``+``b``→``c`` 0.871 but ``b→a`` 0.768 and
leave-one-out 0.878). Measured with the folds of :func:`cross_validate` on a one-off
table of the candidates' values (they are not built-in metrics).

Tried for issue 14's smooth and text false alarms and dropped, each added to the default 7
(``C`` = 1), on the six splits above plus leave-one-photograph-out over all six sets
(``a``, ``b``, ``c``; 2,880 images), in the order all / ``a→b`` / ``b→a`` /
``a``+``b``→``c`` / ``a``+``c``→``b`` / ``b``+``c``→``a`` / six sets; the default 7: 0.911
/ 0.893 / 0.829 / 0.846 / 0.889 / 0.849 / 0.908, mean 0.875, six-set good precision /
recall 0.873 / 0.866, microscopy 0.02, handwriting 0.19. Harmonics of the most prominent
whole-image luma peak (the larger whitened excess at 2f₀ and 3f₀): 0.903 / 0.890 / 0.822 /
0.841 / 0.891 / 0.846 / 0.902, mean 0.871 — neither moiré nor the handwriting has
harmonics (median excess 0.0 for both; only the page's lines of text do); at the
sub-harmonics f₀/2, f₀/3, 2f₀/3, mean 0.870; over all five, 0.871. The top peak's
dominance over the 16th (mean 0.872, ``b→a`` 0.821), the number of peaks above e^2.5
(0.869) and the top peak's angle to the axes (0.871). The peak's prominence in every
128-px tile (its least, or least minus most: an overlay covers the frame; mean 0.871 and
0.872) — the handwriting's paper grain is as even as an overlay (least tile 3.8, moiré
4.2–6.7, photographs 0.4). The lag-1 or lag-2 autocorrelation of the residual ``I − G_σ *
I`` (σ 1 or 2: a blur leaves a smooth, correlated residual, sensor noise a white one; mean
0.869–0.873; lag 1, σ 1: ``a``+``b``→``c`` 0.861 but ``a→b`` 0.881) — the good
microscopy's residual (0.31 at lag 2) is as correlated as its blurred images' (0.23;
photographs −0.01 good, 0.32 blurred): content-normalised measures see it as blurred too.
BRISQUE's MSCN coefficients (``(I − μ)/(σ + 1)``, 7×7 Gaussian window): their kurtosis
0.905 / 0.879 / 0.820 / 0.859 / 0.880 / 0.861 / 0.912, mean 0.874, six-set good precision
/ recall 0.882 / 0.869 (the Laplacian kurtosis's pattern: ``c`` gains, ``a→b`` and ``b→a``
lose); their neighbour correlation at native or half size, its change between the two, and
their variance (mean 0.869–0.872, the variance ``a→b`` 0.865). The log short side (small
blurred images are taken for good): every split equal or worse (mean 0.869). Pairs of
them: the MSCN kurtosis with the lag-1 residual correlation 0.904 / 0.875 / 0.819 / 0.871
/ 0.879 / 0.854 / 0.911, the peak's dominance with the half-size MSCN correlation 0.915 /
0.891 / 0.829 / 0.832 / 0.882 / 0.838 / 0.910. No candidate lifted the microscopy's recall
(0.02 with each) or the handwriting's above 0.25.

What does lift the handwriting is a visibility gate on the peak prominence (derived from
two built-ins: ``luma_peak_score · clip((peak_amplitude_score − ln 0.5) / ln 8, 0, 1)``,
i.e. the prominence counted in full from an amplitude of 4 grey levels, not at all below
0.5). In place of ``luma_peak_score``: 0.896 / 0.876 / 0.844 / 0.844 / 0.883 / 0.868 /
0.908, handwriting 0.92, but faint moiré is taken for good (four sets: moiré → good 15 →
31, good precision 0.846, good → blurry 48 → 67). Among the moiré it then misses are
``b``'s aliased weaves of 0.2–0.7 grey levels (prominence 3–5), fainter than the
handwriting's grain (about 1 grey level) yet labelled moiré: as the sample data labels
them, no amplitude threshold separates the two. Added to the 7: 0.911 / 0.886 / 0.833 /
0.852 / 0.887 / 0.854 / 0.913, mean 0.877, six-set good precision / recall 0.886 / 0.873,
handwriting 0.23 — within the noise, and ``a→b`` lower. Ramps from 0.25 to 2 and from 0.5
to 2 grey levels: the same picture (in place: handwriting 0.58 and 0.81, four-set macro-F1
0.899 and 0.900; added: mean 0.873 and 0.874).

More kinds of degradation in training, not more features: a fourth generator ``d``, for
training only, **shipped** — the packaged model was trained on ``a``, ``b`` and ``d`` at
seeds 0 and 1 (2,880 images, the same 20 photographs) until ``e`` joined (below). It is
written from how real pictures degrade and not from ``c``'s errors, so ``c`` stays a fair
test: defocus with low-light noise added after it, blur a phone denoises and sharpens hard,
low-bitrate video blocks (8×8 DCT keeping u + v < 2–3, deblocked); a garment's fine weave
aliased over part of the frame, two layers of fine net beating, a grey newspaper halftone
scanned at a non-integer scale; a phone's denoise-and-sharpen, shallow depth of field and
haze among the good images; WebP or JPEG. The 7 features, ``C`` = 1, sub-labels, trained
with ``d`` against without it: ``a``+``b``+``d``→``c`` 0.850 against 0.846 (good precision /
recall 0.767 / 0.894 against 0.742 / 0.887; per class on ``c`` blurry 0.849 / 0.791 / 0.819,
good 0.767 / 0.894 / 0.825, moiré 0.955 / 0.863 / 0.906); ``d`` drawn at seeds 2 and 3
instead, 0.851; at seeds 0–3, 0.852. Leave-one-photograph-out over ``a``+``b``+``d`` 0.889
(all 2,880: then the packaged model's cross-validated figure), 0.915 scored on the
``a``+``b`` images (good 0.883 / 0.877; 0.911 and 0.877 / 0.877 without ``d``);
``a``+``d``→``b`` 0.906 (0.893), ``b``+``d``→``a`` 0.831 (0.829), ``a``+``c``+``d``→``b``
0.905 (0.889), ``b``+``c``+``d``→``a`` 0.851 (0.849), leave-one-out over all four scored on
``a``, ``b``, ``c`` 0.917 (0.908); microscopy recall the same in every split, handwriting
within one image but on ``a``+``d``→``b`` and ``a``+``c``+``d``→``b`` (5 and 4 good images
of 16, against 1). On a fresh draw of ``c`` (seeds 2 and 3, 960 images) ``a``+``b``→``c``
scores 0.825 and ``a``+``b``+``d``→``c`` 0.842 (good 0.719 / 0.881 → 0.765 / 0.897); over
all four ``c`` seeds, 0.836 → 0.846 (+0.010; good 0.730 / 0.884 → 0.766 / 0.895).

Why it ships though it missed the bar set for it: that bar, fixed before measuring, was
``a``+``b``+``d``→``c`` at least 0.01 above ``a``+``b``→``c`` on ``c`` seeds 0 and 1; it
gained 0.004, and ``d`` was first dropped. The fresh draw gained 0.017 and the pooled four
seeds 0.010, and no split's macro-F1 went down (good precision on ``c`` gains most, +0.025
to +0.046): ``d`` ships on that larger sample and every split moving up or equal, not on
the test fixed in advance. Its costs: on ``c``, moiré taken for blurry rises from 14 to 24
images (12 of them the perspective mesh, none before); ``b``+``d``→``a`` recognises ``a``'s
colour banding less (0.41 against 0.49); the moon's good recall held out on the ``a`` and
``b`` images falls from 0.906 to 0.844. The packaged model on ``c`` itself (not held out):
macro-F1 0.855 (as before ``d``), good precision 0.774 (0.746), recall 0.909 (0.909); on
``c`` seeds 2 and 3, 0.851 (0.839), 0.767 (0.727), 0.934 (0.925). The model learns most of
``d`` (held out by photograph: noisy blur 0.91, sharpened 0.97, codec 0.90, net and
newsprint moiré 1.00) but not the weave (0.20: its folded, partial beat makes no
whole-image spectral peak); trained on ``a``+``b`` and tested on ``d`` (``a``+``b``→``d``)
it scores 0.779, recognising 59 % of the noisy blur (noise added after a blur reads as
detail) and 12 % of the weave. Two variants of ``d`` were dropped: with a rolling-camera blur
as well (rotation about a point in the frame, corners 8–24 px, shift 5–12 px: spatially
varying, sharp near the centre; 0.57 of it learned) ``c`` scores 0.857, but good recall
drops on ``c`` (0.884) and in the leave-one-out on ``a``+``b`` (0.856); with a denoised
night shot among the good images, 0.841.

A fifth generator ``e``, for training only, **shipped** after ``d``: the packaged model is
trained on ``a``, ``b``, ``d`` and ``e`` at seeds 0 and 1 (3,840 images). Written the same
way (not from ``c``'s errors): a soft picture shrunk and enlarged back, blur saved as JPEG
quality 12–35, a subject moving in a long handheld exposure; a screen shot through a Bayer
filter, receding blinds, a distant brick wall; noisy night shots, vignetting with lateral
colour, local tone mapping as good. The rule, fixed before measuring: ship only if
``a``+``b``+``d``+``e``→``c`` pooled over ``c`` seeds 0–3 gains ≥ 0.010, leave-one-photograph-out
scored on the ``a`` and ``b`` images drops ≤ 0.005, and ``a``+``d``→``b``, ``b``+``d``→``a``
drop ≤ 0.01 each, ``e`` joining both.

``e`` first had a fourth blur, focus missed towards one side (12–25 % of the frame sharp,
the rest defocused to σ 2.5–5 px). It passed the rule and shipped (``lr-0e36ff459b1a``);
it was removed **after** the rule's measurements had been seen, so this version of ``e``
was chosen knowing its scores, not by the rule alone. Why: it contradicts ``d``'s
``good_bokeh`` — both are a frame sharp on part of it and defocused elsewhere, ``d`` labels
it good and ``e`` blurry, and no no-reference measure knows which part is the subject. The
contradiction teaches the model that low detail means blurry — the false alarm issue 14
item 4 is about: with it, the retina's good recall fell 0.938 → 0.656 (how much of that
was its doing, below). The model learnt it worst of ``e``'s kinds (0.33 held out by
photograph).

Figures before ``e`` → with ``e`` (with its missed focus in brackets): ``c`` seeds 0–3
0.846 → 0.907 (0.901; seeds 0, 1: 0.850 → 0.906 (0.901); 2, 3: 0.842 → 0.908 (0.900);
good precision / recall 0.766 / 0.895 → 0.851 / 0.894 (0.840 / 0.887); ``blurry_resample``
recognised 0.36 → 0.62 (0.59), mesh moiré 0.71 → 0.89 — ``e``'s enlarged soft pictures
and perspective screen are its kinds nearest to those, so part of it may be kinship);
leave-one-out on ``a``+``b`` 0.915 → 0.913 (0.912; good 0.883 / 0.877 → 0.895 / 0.862
(0.901 / 0.853)); ``a``+``d``→``b`` 0.906 → 0.911 (0.902), ``b``+``d``→``a`` 0.831 → 0.840
(0.840): all three conditions met, as they were with the missed focus. Its cost, which
the rule does not weigh: good recall on smooth content still falls in every split, the
missed focus gone or not (leave-one-out on ``a``+``b`` 0.656 → 0.604 (0.594): retina
0.938 → 0.719 (0.656), moon 0.844 → 0.781 (0.781), retina detail 0.969 → 0.906 (0.906);
``a``+``d``→``b`` 0.635 → 0.583 (0.531); ``b``+``d``→``a`` 0.594 → 0.573 (0.531); ``c``
0.714 → 0.703 (0.688)), soft frames 0.863 → 0.825 (0.800). So the missed focus was a
sixth of that cost on ``a``+``b`` (0.010 of 0.062), not most of it: the earlier estimate,
dropping its 80 images from the old sets (smooth 0.615), overstated it; the rest comes
from ``e``'s other kinds. Leave-one-out over all eight sets 0.888 (0.876; the packaged
model's cross-validated figure; good 0.848 / 0.868). ``a``+``b``+``d``→``e`` 0.822 (0.780
on the ``e`` with missed focus); learnt with ``e`` in training, held out by photograph
0.886 (0.843): screen 0.78, blinds 0.88, moving subject 0.88, its good kinds 0.85–0.89,
the rest 0.90–1.00.

With naive Bayes, correlated features count twice; logistic regression weighs
them jointly, and gains most where it matters, on the generator it was not
trained on and on smooth content. ``C`` = 1 is the conventional default, not
the best of the table: the differences between 0.3, 1 and 3 are within the
noise of 20 photographs. The absolute measures of detail (variance of the
Laplacian, median edge width, the seed's FFT and Sobel measures) are still
computed but left out: they rate a sharp picture of the moon like a blurred
photograph, and adding them lowers every score. Tried and dropped: narrow
peaks at periods of 2–10 px in 128-px tiles (meant to tell lines of text from
moiré; no gain); before that, re-blur ratio, fine/coarse Laplacian ratio,
high-frequency ratio and angular anisotropy of the spectrum, edge width in
the widest direction, tiled luma peaks, a whole-picture chroma peak, and the
chroma/luma gradient-energy ratio. The errors left are mostly the smooth
sources held out (good phase-contrast microscopy taken for blur, handwriting
for moiré; blurred page and retina-detail crops taken for good) and, across
generators, degradations of a kind the training generator never makes (the
targets of issue 14, macro-F1 ≥ 0.96 and good precision and recall ≥ 0.95,
are not reached, with ``d`` and ``e`` as without them: leave-one-photograph-out on the
packaged model's eight sets 0.888, good 0.848 / 0.868; on the ``a`` and ``b`` images 0.913,
good 0.895 / 0.862; see the README's "Accuracy").

**Model file.** ``format`` (``clearlake-lr/1`` or ``clearlake-nb/1``),
``created_at``, ``metrics`` (``{name: version}`` of each feature: the metric
versions it was trained on), ``metric_set_version`` (the id of those),
``features``, ``transform``, ``scaler`` (mean, scale), ``lr`` (classes, coef,
intercept, C) or ``nb`` (classes, theta, var, class_prior), ``labels``,
``collapse`` (sub-label → label), ``training_set`` (SHA-256 fingerprint of the
sorted ``checksum,label`` lines, counts) and ``cross_validation`` (scores from
folds grouped by source photograph). :attr:`Model.id` hashes everything but
``created_at``, so the same training data and code give the same id. A model
from before metrics had versions of their own names only
``metric_set_version``; one of
:data:`~clearlake.quality.registry.LEGACY_METRIC_SETS` is read as the versions
listed there, any other is refused (retrain it).

A model is usable by a run that computes every metric it names at that version
(:meth:`Model.check`); otherwise :class:`MissingMetricError` says which is missing.

**Regenerating the packaged model** (after a change to a metric it reads, or to
its features): the README's "Regenerate the packaged model".
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

#: Model file formats, by kind of classifier.
FORMATS = {"naive_bayes": "clearlake-nb/1", "logistic": "clearlake-lr/1"}
FORMAT = FORMATS["naive_bayes"]  # (what models before logistic regression all are)
DEFAULT_KIND = "logistic"
TRANSFORM = "signed_log1p"
DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model.json")
DEFAULT_FEATURES: tuple[str, ...] = (
    "sharp_edge_width_score",
    "octave_knee_score",
    "blur_anisotropy_score",
    "spectral_slope_score",
    "luma_peak_score",
    "chroma_peak_score",
    "peak_amplitude_score",
)
#: GaussianNB's var_smoothing (a fraction of the largest feature variance).
VAR_SMOOTHING = 1e-9
#: Inverse strength of the logistic regression's L2 penalty on standardised features.
LOGISTIC_C = 1.0
_REQUIRED = (
    "format",
    "metric_set_version",
    "features",
    "transform",
    "scaler",
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


def make_pipeline(kind: str = DEFAULT_KIND) -> Any:
    """The unfitted scikit-learn pipeline: signed log → StandardScaler → the classifier
    (`kind`: ``logistic``, L2-penalised multinomial logistic regression; ``naive_bayes``,
    GaussianNB)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if kind not in FORMATS:
        raise ValueError(f"unknown classifier kind {kind!r}; known: {', '.join(FORMATS)}")
    final = (("nb", GaussianNB(var_smoothing=VAR_SMOOTHING)) if kind == "naive_bayes"
             else ("lr", LogisticRegression(C=LOGISTIC_C, max_iter=5000, tol=1e-8)))
    return Pipeline(
        [
            ("log", FunctionTransformer(signed_log1p)),
            ("scale", StandardScaler()),
            final,
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
        self._kind = _kind(self._data)
        # Every record names its model: hashed once here, not once per image.
        content = {k: v for k, v in self._data.items() if k != "created_at"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        prefix = "nb-" if self._kind == "naive_bayes" else "lr-"
        self._id = prefix + hashlib.sha256(canonical.encode()).hexdigest()[:12]
        self._metrics = _metric_versions(self._data)
        if check_version:  # built-ins are known now; other metrics when a run has them
            builtin = builtin_metrics()
            self.check(builtin, only=[n for n in self._metrics if n in builtin])
        self._features: tuple[str, ...] = tuple(self._data["features"])
        self._mean = np.asarray(self._data["scaler"]["mean"], dtype=np.float64)
        self._scale = np.asarray(self._data["scaler"]["scale"], dtype=np.float64)
        if self._kind == "naive_bayes":
            nb = self._data["nb"]
            self._sub_classes: tuple[str, ...] = tuple(nb["classes"])
            self._theta = np.asarray(nb["theta"], dtype=np.float64)
            self._var = np.asarray(nb["var"], dtype=np.float64)
            self._log_prior = np.log(np.asarray(nb["class_prior"], dtype=np.float64))
        else:
            lr = self._data["lr"]
            self._sub_classes = tuple(lr["classes"])
            self._coef = np.asarray(lr["coef"], dtype=np.float64)
            self._intercept = np.asarray(lr["intercept"], dtype=np.float64)
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
    def kind(self) -> str:
        """``logistic`` or ``naive_bayes``."""
        return self._kind

    @property
    def id(self) -> str:
        """``nb-`` (naive Bayes) or ``lr-`` (logistic) + 12 hex of the SHA-256 of the canonical
        JSON (``created_at`` excluded)."""
        return self._id

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
        return {k: v for k, v in self._data.items() if k not in ("scaler", "nb", "lr")}

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

        ``z = (signed_log1p(x) − mean) / scale``; for each sub-class c, logistic:
        ``ln p(c|z) ∝ w_c·z + b_c``; naive Bayes:
        ``ln p(c|z) ∝ ln prior_c − ½ Σ_j [ln(2π var_cj) + (z_j − θ_cj)² / var_cj]``
        (GaussianNB's joint log-likelihood); normalised with log-sum-exp; a
        label's probability is the sum over its sub-classes.
        """
        if len(rows) == 0:
            return np.zeros((0, len(self._labels)))
        z = (signed_log1p(self.matrix(rows)) - self._mean) / self._scale
        if self._kind == "logistic":
            jll = z @ self._coef.T + self._intercept[None, :]
        else:
            jll = self._log_prior[None, :] - 0.5 * (
                np.log(2.0 * np.pi * self._var).sum(axis=1)[None, :]
                + (((z[:, None, :] - self._theta[None, :, :]) ** 2)
                   / self._var[None, :, :]).sum(axis=2)
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
    kind: str = DEFAULT_KIND,
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
        kind: ``logistic`` (default) or ``naive_bayes`` (see :func:`make_pipeline`).

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
    order = _canonical_order(x, np.asarray(subs))  # the same set in any order, the same model
    pipe = make_pipeline(kind).fit(x[order], np.asarray(subs)[order])
    cv = cross_validate(rows, labels, groups, sublabels=subs, features=features, folds=folds,
                        kind=kind)
    if checksums is None:
        checksums = [hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest() for r in x]
    lines = sorted(f"{c},{lab}" for c, lab in zip(checksums, labels, strict=True))
    scaler = pipe.named_steps["scale"]
    data = {
        "format": FORMATS[kind],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metric_set_version": used.id,
        "metrics": used.versions,
        "features": list(features),
        "transform": TRANSFORM,
        "scaler": {"mean": _floats(scaler.mean_), "scale": _floats(scaler.scale_)},
        **_fitted(pipe),
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


def _fitted(pipe: Any) -> dict[str, Any]:
    """The fitted classifier's parameters, as the model file keeps them."""
    if "nb" in pipe.named_steps:
        nb = pipe.named_steps["nb"]
        return {"nb": {
            "classes": [str(c) for c in nb.classes_],
            "theta": [_floats(r) for r in nb.theta_],
            "var": [_floats(r) for r in nb.var_],
            "class_prior": _floats(nb.class_prior_),
            "var_smoothing": VAR_SMOOTHING,
        }}
    lr = pipe.named_steps["lr"]
    coef, intercept = np.asarray(lr.coef_), np.asarray(lr.intercept_)
    if len(lr.classes_) == 2:  # sklearn keeps one row, for class 1: as softmax, two rows
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return {"lr": {
        "classes": [str(c) for c in lr.classes_],
        "coef": [_floats(r) for r in coef],
        "intercept": _floats(intercept),
        "C": LOGISTIC_C,
    }}


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

    def subset(self, selected: Sequence[bool], split: str) -> Evaluation:
        """The same predictions restricted to the selected rows (same classes)."""
        keep = [i for i, s in enumerate(selected) if s]
        return Evaluation(self.classes, tuple(self.truth[i] for i in keep),
                          tuple(self.predicted[i] for i in keep), split)

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
    kind: str = DEFAULT_KIND,
    held_out: Sequence[bool] | None = None,
) -> Evaluation:
    """Out-of-fold predictions with folds grouped by source (a source is never split).

    Each fold fits the same pipeline on the other sources and predicts the held-out
    ones with the same collapse rule as :meth:`Model.predict`. With `held_out`, the
    rows it marks are only ever predicted and the others only ever trained on — e.g.
    train on one degradation generator's images and test on another's, still by
    source: a test photograph is never in training under any generator.

    Args:
        rows: metric rows.
        labels: top-level labels.
        groups: source photograph of each row.
        sublabels: classes to fit (default: the labels).
        features: metric names to use.
        folds: number of folds; 0 = one per source (leave one source out).
        kind: the classifier (see :func:`make_pipeline`).
        held_out: per row, True for test-only rows (default: every row is both).

    Returns:
        The evaluation over all rows (over the `held_out` rows, with it).
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
    test_only = np.zeros(len(y), bool) if held_out is None else np.asarray(held_out, bool)
    order = _canonical_order(x, subs, g)  # folds and fits independent of the rows' order
    x, subs, y, g, test_only = x[order], subs[order], y[order], g[order], test_only[order]
    if held_out is not None and not (test_only.any() and (~test_only).any()):
        raise ValueError("held_out must mark some rows for testing and leave some to train on")
    for train_idx, test_idx in GroupKFold(n_splits=k).split(x, y, g):
        if held_out is not None:
            train_idx, test_idx = train_idx[~test_only[train_idx]], test_idx[test_only[test_idx]]
            if len(test_idx) == 0:
                continue
        pipe = make_pipeline(kind).fit(x[train_idx], subs[train_idx])
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
    split = f"{split} ({n_groups} sources)"
    inverse = np.argsort(order)  # back to the order the rows came in
    y, predicted, test_only = y[inverse], predicted[inverse], test_only[inverse]
    if held_out is None:
        return Evaluation(classes, tuple(y.tolist()), tuple(predicted.tolist()), split)
    return Evaluation(classes, tuple(y[test_only].tolist()),
                      tuple(predicted[test_only].tolist()),
                      f"{split}, trained on the other sets, tested on the held-out ones")


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


def _canonical_order(x: np.ndarray, *columns: np.ndarray) -> np.ndarray:
    """An order of the rows that depends on their contents only (feature values, then the
    given columns), so that one training set gives one model, bit for bit, however its
    CSVs were listed or concatenated (the solver's rounding follows the row order)."""
    return np.lexsort([*(np.asarray(c).astype(str) for c in reversed(columns)), *x.T[::-1]])


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


def _kind(data: Mapping[str, Any]) -> str:
    """The kind of classifier a model document holds (by its format)."""
    return next(k for k, f in FORMATS.items() if f == data["format"])


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
    if data["format"] not in FORMATS.values():
        raise ModelError(f"unknown model format {data['format']!r} (expected one of "
                         f"{', '.join(FORMATS.values())})")
    parameters = "nb" if _kind(data) == "naive_bayes" else "lr"
    if parameters not in data:
        raise ModelError(f"model is missing field(s): {parameters}")
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
        labels = list(data["labels"])
        collapse = dict(data["collapse"])
        fitted = data[parameters]
        classes = list(fitted["classes"])
        arrays = ([np.asarray(fitted[k], dtype=np.float64) for k in ("theta", "var",
                                                                      "class_prior")]
                  if parameters == "nb" else
                  [np.asarray(fitted[k], dtype=np.float64) for k in ("coef", "intercept")])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model parameters are malformed: {exc}") from exc
    k, f = len(classes), len(features)
    shapes_ok = mean.shape == scale.shape == (f,) and k >= 1 and (
        arrays[0].shape == arrays[1].shape == (k, f) and arrays[2].shape == (k,)
        if parameters == "nb" else arrays[0].shape == (k, f) and arrays[1].shape == (k,))
    if not shapes_ok:
        raise ModelError("model parameters have inconsistent shapes")
    if not all(np.isfinite(a).all() for a in (mean, scale, *arrays)) or (scale <= 0).any():
        raise ModelError("model parameters must be finite, with a positive scale")
    if parameters == "nb":
        _, var, prior = arrays
        if (var <= 0).any() or (prior <= 0).any():
            raise ModelError("model parameters must be finite, with positive scale, var and "
                             "prior")
        if not math.isclose(float(prior.sum()), 1.0, abs_tol=1e-6):
            raise ModelError("model class priors do not sum to 1")
    if any(collapse.get(c) not in labels for c in classes):
        raise ModelError("model 'collapse' must map every NB class to one of its labels")
