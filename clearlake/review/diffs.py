"""Quality diffs for the review pages: computed once per pair of commits, then kept.

A diff depends only on the two commits (and the signing key), so it is cached by
commit ids; a branch that moves gets a new one. What a page shows of it is chosen by
`cards`: the images of one kind of change, optionally of one transition, a page at a
time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from clearlake.lakefs import LakeFS
from clearlake.quality_diff import ARROW, ImageChange, QualityDiff, quality_diff

KINDS = ("changed", "relabelled", "added", "removed")
CARDS_PER_PAGE = 24
DIFFS_KEPT = 8


@dataclass(frozen=True)
class Cards:
    """The images of one kind of change a page shows, and how many there are in all."""

    kind: str
    changes: list[ImageChange]
    total: int
    offset: int


def transition(change: ImageChange) -> str:
    """'good→blurry' for a change (its before and after names)."""
    before = change.before.name if change.before else "∅"
    after = change.after.name if change.after else "∅"
    return f"{before}{ARROW}{after}"


def cards(diff: QualityDiff, kind: str, *, only: str = "", offset: int = 0,
          limit: int = CARDS_PER_PAGE) -> Cards:
    """The changes of `kind` ('changed', 'relabelled', 'added', 'removed'), only those of
    transition `only` when given, from `offset` on."""
    changes = list(getattr(diff, kind))
    if only:
        changes = [c for c in changes if transition(c) == only]
    return Cards(kind, changes[offset : offset + limit], len(changes), offset)


class DiffCache:
    """Quality diffs by (repository, from commit, to commit), least recently used dropped."""

    def __init__(self, key: bytes, kept: int = DIFFS_KEPT) -> None:
        self.key = key
        self.kept = kept
        self._diffs: OrderedDict[tuple[str, str, str], QualityDiff] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, lakefs: LakeFS, repository: str, from_ref: str, to_ref: str,
            from_commit: str, to_commit: str) -> QualityDiff:
        """The diff between two refs resolved to these commits."""
        cache_key = (repository, from_commit, to_commit)
        with self._lock:  # one diff at a time: a second request waits and reuses it
            if cache_key in self._diffs:
                self._diffs.move_to_end(cache_key)
                return self._diffs[cache_key]
            diff = quality_diff(lakefs, repository, from_commit, to_commit, key=self.key)
            self._diffs[cache_key] = diff
            while len(self._diffs) > self.kept:
                self._diffs.popitem(last=False)
            return diff
