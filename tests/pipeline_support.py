"""Helpers for pipeline tests: distinct synthetic photographs and lakeFS shortcuts."""

from __future__ import annotations

import secrets

import cv2
import numpy as np

from clearlake.store import LakeFS


def photo(seed: int, size: int = 160, blur: float = 0.0) -> bytes:
    """A JPEG with photo-like structure (smooth shapes, texture, edges), unique per seed."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.float32)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.circle(image, centre, int(rng.integers(8, size // 3)), colour, -1, cv2.LINE_AA)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    ok, buffer = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8),
                              [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buffer.tobytes()


def unique_seed() -> int:
    """A seed no other test uses, so the shared metrics store has never seen its images."""
    return secrets.randbits(40)


def commit_images(lakefs: LakeFS, repo: str, images: dict[str, bytes], branch: str = "main",
                  message: str = "add images") -> str:
    """Upload and commit images; return the commit id."""
    lakefs.upload_many(repo, branch, images.items())
    return lakefs.commit(repo, branch, message)
