"""Lineage of one image: where its metrics came from and how its label changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clearlake.errors import NotFoundError
from clearlake.pipeline import record_path
from clearlake.store import LakeFS


@dataclass(frozen=True)
class LabelHistoryEntry:
    """The image's record as one results commit left it."""

    commit: str
    date: int
    label: str | None
    checksum: str
    source_commit: str
    run_id: str
    origin: str
    model_id: str


@dataclass(frozen=True)
class Lineage:
    """Everything clearlake knows about one image at a ref.

    Attributes:
        record: the current record (checksum, metrics, label, model, computed_at, …).
        history: every results commit that changed the record, newest first.
    """

    record: dict[str, Any]
    history: list[LabelHistoryEntry]


def lineage(lakefs: LakeFS, repository: str, path: str, ref: str = "main") -> Lineage:
    """The record of image `path` at `ref` and its history across results commits.

    Raises:
        NotFoundError: the image has no record at `ref` (never processed there).
    """
    key = record_path(path)
    try:
        current = json.loads(lakefs.get_object(repository, ref, key))
    except NotFoundError as error:
        raise NotFoundError(
            "no clearlake record for this image (not processed on this ref yet?)",
            repository=repository, ref=ref, path=path,
        ) from error
    history = []
    seen: set[str] = set()
    for commit in lakefs.log(repository, ref, objects=[key]):
        try:
            old = json.loads(lakefs.get_object(repository, commit.id, key))
        except NotFoundError:
            continue  # the commit that deleted it
        # A results commit and the merge that applied it both show the change: keep one.
        identity = f"{old['run_id']}/{old['checksum']}/{old['label']}"
        if identity in seen:
            continue
        seen.add(identity)
        history.append(LabelHistoryEntry(
            commit=commit.id, date=commit.creation_date, label=old["label"],
            checksum=old["checksum"], source_commit=old["source_commit"],
            run_id=old["run_id"], origin=old["origin"], model_id=old["model_id"],
        ))
    return Lineage(current, history)
