"""Helpers for tests: distinct synthetic photographs, lakeFS shortcuts, waiting for runs,
and the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from clearlake import layout, pipeline
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key

CLI = [sys.executable, "-m", "clearlake.cli"]
SETTLE_TIMEOUT_S = 180.0


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


def records_on(lakefs: LakeFS, repo: str, ref: str = "main") -> dict[str, dict[str, Any]]:
    """Every record at `ref`, by image path."""
    return {
        layout.image_path_of(o.path): json.loads(lakefs.get_object(repo, ref, o.path))
        for o in lakefs.list_objects(repo, ref, layout.RECORDS_PREFIX)
    }



def wait_until(condition: Callable[[], Any], timeout_s: float = SETTLE_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    raise TimeoutError(f"not settled within {timeout_s} s")



def classify_runs(repo: str) -> list[Any]:
    """Flow runs of the classify-commit deployment for `repo`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["classify-commit"])), limit=200)
    return [r for r in runs if r.parameters.get("repository") == repo]



def settled(lakefs: LakeFS, repo: str, branch: str = "main") -> bool:
    return pipeline.is_covered(lakefs, repo, branch, signing_key())



def run_cli(
    *args: str, home: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLEARLAKE_HOME": str(home), "COLUMNS": "200", **(env or {})}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=check)


class CountingLakeFS(LakeFS):
    """The real client, counting the lakeFS requests of listings, presigning and reads.

    Attributes:
        pages: listing pages requested.
        entries: entries those pages held.
        presigns: objects presigned one at a time.
        object_reads: objects read through lakeFS's object API.
    """

    def __init__(self, lakefs: LakeFS) -> None:
        super().__init__(lakefs.settings)
        self.pages = self.entries = self.presigns = self.object_reads = 0

    def _list_entries(self, *args: Any, **kwargs: Any) -> tuple[list[tuple[str, str]], bool]:
        self.pages += 1
        entries, more = super()._list_entries(*args, **kwargs)
        self.entries += len(entries)
        return entries, more

    def presign(self, *args: Any, **kwargs: Any) -> str:
        self.presigns += 1
        return super().presign(*args, **kwargs)

    def get_object(self, *args: Any, **kwargs: Any) -> bytes:
        self.object_reads += 1
        return super().get_object(*args, **kwargs)
