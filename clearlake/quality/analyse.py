"""One image's bytes in, its checksum, decode outcome and metrics out.

`analyse` is the per-image unit of work shared by the local `score` command
and the distributed pipeline: it hashes, decodes once (`decode.decode`) and
computes the metrics asked for (all of a `registry.MetricSet`, or only those an
earlier analysis lacks). Bad input never raises — it comes back as a typed
outcome with a reason, and a metric that fails on an image is a failure naming
the metric; programming errors in clearlake itself do propagate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clearlake.quality import decode as decoding
from clearlake.quality.metrics import METRIC_NAMES
from clearlake.quality.registry import Metric, MetricSet, builtin_metrics
from clearlake.quality.types import Outcome


def analysis_version(metric_set: MetricSet) -> str:
    """Identifies what `analyse` computes with `metric_set`: its metrics' versions and
    the decoding rules (a change of decoding rules changes pixels, hence metrics)."""
    return f"{metric_set.id}+dec{decoding.DECODER_VERSION}"


ANALYSIS_VERSION = analysis_version(builtin_metrics())
"""What `analyse` computes by default (the built-in metrics): the local cache's key."""


@dataclass(frozen=True)
class Analysis:
    """The result of analysing one image's bytes.

    Attributes:
        sha256: hex SHA-256 of the bytes (the content key metrics are cached under).
        size: number of bytes.
        outcome: how decoding went.
        reason: why decoding failed; empty when `outcome` is OK.
        width: width in pixels after orientation (from the header when the image
            was refused; 0 when not even the header could be read).
        height: height in pixels, likewise.
        metrics: ``{name: value}`` (built-ins in `metrics.METRIC_NAMES` order, then
            the others), or None unless `outcome` is OK.
        failures: ``{name: why}`` of the metrics that failed on this image.
    """

    sha256: str
    size: int
    outcome: Outcome
    reason: str = ""
    width: int = 0
    height: int = 0
    metrics: dict[str, float] | None = None
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the image decoded and was measured."""
        return self.outcome is Outcome.OK


def analyse(
    data: bytes,
    *,
    max_pixels: int | None = None,
    sha256: str | None = None,
    metric_set: MetricSet | None = None,
    only: Sequence[Metric] | None = None,
) -> Analysis:
    """Hash, decode and measure one image.

    Args:
        data: the image file's bytes.
        max_pixels: pixel limit for decoding (see `decode.decode`); None means
            the configured default (`CLEARLAKE_MAX_PIXELS`, else the 52.7 megapixels
            that the 2.75 GiB per-image memory budget allows).
        sha256: the hex SHA-256 of `data` when the caller has just computed it
            (to look the bytes up in a cache), so it is not computed twice.

    Returns:
        The analysis; never raises for bad image bytes.
    """
    digest = sha256 if sha256 is not None else hashlib.sha256(data).hexdigest()
    result = decoding.decode(data, max_pixels=max_pixels)
    if result.outcome is not Outcome.OK or result.image is None:
        # The header's size, where it could be read, says whether a cached refusal
        # still holds under another pixel limit; reading it again costs microseconds.
        width = height = 0
        header, _ = decoding.read_header(data)
        if header is not None:
            width, height = header.width, header.height
            if header.orientation in (5, 6, 7, 8):
                width, height = height, width
        return Analysis(digest, len(data), result.outcome, result.reason, width, height)
    image = result.image
    metric_set = metric_set if metric_set is not None else builtin_metrics()
    values, failures = metric_set.compute(image, only)
    return Analysis(
        sha256=digest,
        size=len(data),
        outcome=Outcome.OK,
        width=image.width,
        height=image.height,
        metrics=in_column_order(values),
        failures=dict(failures),
    )


def in_column_order(values: Mapping[str, float]) -> dict[str, float]:
    """`values` in the order of their columns: built-ins as documented, then the others."""
    return dict(sorted(values.items(), key=lambda item: _column(item[0])))


def _column(name: str) -> tuple[int, str]:
    """Built-ins first, in their documented order, then the others by name."""
    return (METRIC_NAMES.index(name), "") if name in METRIC_NAMES else (len(METRIC_NAMES), name)
