"""A repository with classified images for the review tests: two results commits, the
second blurring some images of the first, and one file that is not an image."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from clearlake import pipeline
from clearlake.config import StackSecrets
from clearlake.lakefs import LakeFS
from clearlake.provenance import signing_key
from clearlake.stack.services import Stack
from tests.pipeline_support import commit_images, photo, unique_seed

SHARP = 10
SOFT = 4
BLURRED_LATER = 3  # sharp images replaced by blurred versions in the second commit
CORRUPT_PATH = "broken/corrupt.jpg"


@dataclass(frozen=True)
class ReviewedRepo:
    """What the tests know about the repository.

    Attributes:
        name: the repository.
        first: the first results commit, before the blurring.
        second: the second results commit, the head of main.
        records: the verified records at main's head, by path.
        blurred: the paths blurred by the second commit.
    """

    name: str
    first: str
    second: str
    records: dict[str, dict[str, Any]]
    blurred: list[str]

    def labels(self) -> dict[str, int]:
        """Images per label at main's head."""
        counts: dict[str, int] = {}
        for record in self.records.values():
            if record["label"]:
                counts[record["label"]] = counts.get(record["label"], 0) + 1
        return counts


def make_reviewed_repo(lakefs: LakeFS, dask_address: str) -> ReviewedRepo:
    """Create and classify the repository (the caller deletes it)."""
    from clearlake.flows.classify import classify_commit

    name = f"review-{secrets.token_hex(4)}"
    lakefs.create_repository(name)
    seed = unique_seed()
    images = {f"images/sharp_{i:02d}.jpg": photo(seed + i, size=320) for i in range(SHARP)}
    images |= {f"images/soft_{i:02d}.jpg": photo(seed + 100 + i, size=320, blur=5.0)
               for i in range(SOFT)}
    images[CORRUPT_PATH] = b"these bytes are not an image"
    commit_images(lakefs, name, images, message="a first shoot")
    first = classify_commit(name, "main", dask_address=dask_address, batch_size=8)
    blurred = [f"images/sharp_{i:02d}.jpg" for i in range(BLURRED_LATER)]
    commit_images(lakefs, name, {p: photo(seed + int(p[-6:-4]), size=320, blur=6.0)
                                 for p in blurred}, message="blurred by a bad export")
    second = classify_commit(name, "main", dask_address=dask_address, batch_size=8)
    key = signing_key()
    records = {r["path"]: r for r in pipeline.read_table(lakefs, name, "main", "main", key=key)}
    return ReviewedRepo(name, first["results_commit"], second["results_commit"], records,
                        blurred)


def admin_keys(stack: Stack) -> tuple[str, str]:
    """The lakeFS admin's access key pair."""
    secrets_ = StackSecrets.load(stack.home)
    return secrets_.lakefs_access_key_id, secrets_.lakefs_secret_access_key.get_secret_value()


@contextlib.contextmanager
def signed_in_client(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the stack's review pages with the admin's key pair."""
    key_id, secret = admin_keys(stack)
    with httpx.Client(base_url=stack.bridge_url, timeout=120) as client:
        answer = client.post("/review/_login", data={"access_key_id": key_id,
                                                      "secret_access_key": secret,
                                                      "next": "/review/"})
        assert answer.status_code == 303, answer.text
        yield client


@pytest.fixture(scope="session")
def reviewed(lakefs: LakeFS, dask_address: str) -> Iterator[ReviewedRepo]:
    """The repository for the review and browser tests, made once per session."""
    found = make_reviewed_repo(lakefs, dask_address)
    try:
        yield found
    finally:
        lakefs.delete_repository(found.name)
