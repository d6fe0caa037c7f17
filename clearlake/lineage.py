"""Lineage of one image: where its metrics came from and how its label changed.

Only records clearlake signed are reported (`provenance.verified_record`): anyone can
commit a file under `_clearlake/records/`, and lineage must not pass theirs off as
clearlake's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clearlake.errors import NotFoundError
from clearlake.lakefs import LakeFS
from clearlake.pipeline import record_path
from clearlake.provenance import signing_key, verified_record


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


def lineage(
    lakefs: LakeFS, repository: str, path: str, ref: str = "main", *, key: bytes | None = None
) -> Lineage:
    """The record of image `path` at `ref` and its history across results commits.

    Args:
        key: the signing key records are checked with; default `signing_key()`.

    Raises:
        NotFoundError: the image has no record at `ref` (never processed there), or the
            one there is not clearlake's (written by someone else, or before records were
            signed). Versions of the record that are not clearlake's are left out of the
            history.
    """
    key = key if key is not None else signing_key()
    record_key = record_path(path)
    try:
        stored = lakefs.get_object(repository, ref, record_key)
    except NotFoundError as error:
        raise NotFoundError(
            "no clearlake record for this image (not processed on this ref yet?)",
            repository=repository, ref=ref, path=path,
        ) from error
    current = verified_record(stored, key, path=path)
    if current is None:
        raise NotFoundError(
            f"the record at {record_key} was not written by clearlake (its signature does "
            "not verify), so it says nothing about this image",
            repository=repository, ref=ref, path=path,
        )
    history = []
    seen: set[str] = set()
    for commit in lakefs.log(repository, ref, objects=[record_key]):
        old = verified_record(lakefs.get_object_or_none(repository, commit.id, record_key),
                              key, path=path)
        if old is None:
            continue  # the commit that deleted it, or someone else's version
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
