"""Types shared by decoding, metrics and classification."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Outcome(StrEnum):
    """What happened when an image's bytes were decoded."""

    OK = "ok"
    CORRUPT = "corrupt"  # empty, not an image, or truncated
    UNSUPPORTED = "unsupported"  # a format OpenCV cannot read
    TOO_LARGE = "too_large"  # header announces more pixels than the configured limit
    FAILED = "failed"  # the pipeline could not read the bytes (retried by the next run)
    METRIC_FAILED = "metric_failed"  # decoded, but a metric the model needs failed on it


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image, orientation applied, 8 bits per channel.

    Attributes:
        colour: H×W×3 uint8 BGR planes, or None when the source is greyscale.
        grey: H×W uint8 luminance (what the greyscale metrics read).
        width: width in pixels after orientation.
        height: height in pixels after orientation.
    """

    colour: np.ndarray | None
    grey: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class DecodeResult:
    """The outcome of decoding one image: an image when `outcome` is OK, else a reason."""

    outcome: Outcome
    image: DecodedImage | None = None
    reason: str = ""
