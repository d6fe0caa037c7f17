"""The pre-merge quality gate.

`_clearlake/policy.yaml`, read from the *destination* branch's head (so a branch
cannot bring its own lenient policy), says what may enter it:

    max_not_good_percent: 10     # at most 10 % of the merged-in images not 'good'
    rules:
      - prefix: products/        # under this folder…
        forbid: [blurry, moire]  # …no image may carry these labels

The gate looks at the images the merge brings in (lakeFS's three-dot diff between
destination and source: what the source changed since they diverged), labels them
with the destination's model from the metrics already recorded on the source
(computing any missing ones now), and allows or refuses with a readable reason: what
the merge brings, from its quality diff (`quality_diff.merge_sides`: "this merge
brings 12 blurry images into main: …", "it turns 1 image on main good→blurry: …"),
then each rule it breaks.
Only records clearlake signed count: anyone can write under `_clearlake/records/`
on their branch, so any other record is measured again, from the metrics store
where its bytes were seen before.
Its answer depends only on the two commits, so it is the same each time lakeFS
re-runs the hook. With no policy file everything passes.

The gate is a guard-rail, not access control: lakeFS's open-source edition cannot
stop a user from deleting the action file on their branch. `reconcile` reports
merges into protected branches that have no recorded pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from clearlake.lakefs import LakeFS
from clearlake.layout import POLICY_PATH
from clearlake.metrics_store import MetricsStore
from clearlake.provenance import signing_key
from clearlake.quality_diff import (
    Side,
    arrivals,
    brings_lines,
    compare,
    images_phrase,
    listing,
    merge_sides,
    transition_paths,
)

GATE_RECORDS = "gates"
BRINGS_LIMIT = 10  # image paths named per line of a verdict


@dataclass(frozen=True)
class Rule:
    """No image under `prefix` may carry one of the `forbid` labels."""

    prefix: str
    forbid: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """What may enter a protected branch.

    Attributes:
        max_not_good_percent: largest share (in %) of incoming images not labelled
            'good' (failed decodes count as not good); None means no limit.
        rules: per-prefix forbidden labels.
    """

    max_not_good_percent: float | None = None
    rules: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Policy:
        """Read a policy file; a malformed one is an error (a gate must not guess)."""
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{POLICY_PATH} must be a mapping")
        limit = data.get("max_not_good_percent")
        rules = tuple(
            Rule(str(r.get("prefix", "")), tuple(str(label) for label in r["forbid"]))
            for r in data.get("rules") or ()
        )
        return cls(None if limit is None else float(limit), rules)


@dataclass
class Verdict:
    """The gate's answer, and why."""

    allowed: bool
    repository: str
    source_commit: str
    destination: str
    destination_commit: str
    checked: int = 0
    reasons: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    brings: list[str] = field(default_factory=list)

    def explain(self) -> str:
        """The text lakeFS keeps in the hook's log (and `clearlake merge` prints): a head
        line, what the merge brings (from its quality diff), then the reasons."""
        head = (f"clearlake gate: {'ALLOWED' if self.allowed else 'REFUSED'} merge of "
                f"{self.source_commit[:12]} into {self.destination} "
                f"({self.checked} incoming images checked against "
                f"{POLICY_PATH}@{self.destination_commit[:12]})")
        lines = [head, *(f"  {line}" for line in self.brings),
                 *(f"  - {reason}" for reason in self.reasons)]
        return "\n".join(lines) + "\n"


def load_policy(lakefs: LakeFS, repository: str, ref: str) -> Policy | None:
    """The policy at `ref`, None when there is none."""
    text = lakefs.get_object_or_none(repository, ref, POLICY_PATH)
    return None if text is None else Policy.parse(text.decode())


def labels_of(records: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{path: label}, 'not decodable (<outcome>)' for an image without one; sorted by path."""
    return {p: r["label"] or f"not decodable ({r['outcome']})" for p, r in sorted(records.items())}


def incoming_labels(
    lakefs: LakeFS, repository: str, source_commit: str, destination_commit: str,
    *, key: bytes | None = None,
) -> dict[str, str]:
    """Label of every image the merge brings in, by the destination's model.

    A record on the source is used only if clearlake signed it for this image's path and
    checksum (`key`, default `signing_key()`); every other image is measured, reusing
    the metrics store's analysis of its bytes where there is one
    (`quality_diff.merge_sides`).
    """
    key = key if key is not None else signing_key()
    _, incoming = merge_sides(lakefs, repository, source_commit, destination_commit, key=key)
    return labels_of(incoming.records)


def judge(policy: Policy, labels: dict[str, str]) -> list[str]:
    """Every rule the incoming images break (empty: allowed). Deterministic order.

    The share of images not good is given without their paths: the verdict names them
    in what the merge brings.
    """
    reasons = []
    not_good = [p for p, label in labels.items() if label != "good"]
    if policy.max_not_good_percent is not None and labels:
        share = 100.0 * len(not_good) / len(labels)
        if share > policy.max_not_good_percent:
            reasons.append(
                f"{share:.1f} % of incoming images are not good ({len(not_good)} of "
                f"{len(labels)}; limit {policy.max_not_good_percent:g} %)")
    for rule in policy.rules:
        broken = [p for p, label in labels.items()
                  if p.startswith(rule.prefix) and label in rule.forbid]
        if broken:
            reasons.append(
                f"no {'/'.join(rule.forbid)} image may enter {rule.prefix or 'the branch'}: "
                + listing([f"{p} ({labels[p]})" for p in broken], BRINGS_LIMIT))
    return reasons


def evaluate_merge(
    repository: str, source_commit: str, destination: str, merge_commit: str = ""
) -> Verdict:
    """Decide whether `source_commit` may be merged into `destination`, and record it."""
    lakefs = LakeFS()
    destination_commit = lakefs.head(repository, destination)
    verdict = Verdict(True, repository, source_commit, destination, destination_commit)
    policy = load_policy(lakefs, repository, destination_commit)
    if policy is None:
        verdict.reasons.append(f"no {POLICY_PATH} on {destination}: everything passes")
    else:
        key = signing_key()
        before, incoming = merge_sides(lakefs, repository, source_commit, destination_commit,
                                       key=key)
        verdict.labels = labels_of(incoming.records)
        verdict.checked = len(verdict.labels)
        verdict.brings = what_it_brings(before, incoming, destination)
        verdict.reasons = judge(policy, verdict.labels) or ["every incoming image passes"]
        verdict.allowed = verdict.reasons == ["every incoming image passes"]
    record_verdict(lakefs, verdict)
    return verdict


def what_it_brings(before: Side, incoming: Side, destination: str) -> list[str]:
    """The merge's quality diff in a few lines: the images not labelled good it brings in
    ('this merge brings 12 blurry images into main: …'), and how the labels of the
    images it replaces change."""
    diff = compare(before.records, incoming.records, repository="", from_ref=destination,
                   to_ref=incoming.ref)
    lines = brings_lines(arrivals(diff), destination, limit=BRINGS_LIMIT)
    lines += [f"it turns {images_phrase(len(paths))} on {destination} {transition}: "
              f"{listing(paths, BRINGS_LIMIT)}"
              for transition, paths in transition_paths(diff).items()]
    return lines


def verdict_path(repository: str, source_commit: str) -> str:
    """Where the gate's verdict on merging `source_commit` is kept in the metrics store."""
    return f"{GATE_RECORDS}/{repository}/{source_commit}.json"


def record_verdict(lakefs: LakeFS, verdict: Verdict) -> None:
    """Keep the verdict, so `reconcile` can tell merges that passed the gate."""
    store = MetricsStore(lakefs)
    store.put_documents({verdict_path(verdict.repository, verdict.source_commit):
                         json.dumps(asdict(verdict), sort_keys=True).encode()},
                        f"clearlake gate: {verdict.repository}@{verdict.source_commit[:12]}")


def recorded_verdict(lakefs: LakeFS, repository: str, source_commit: str) -> dict[str, Any] | None:
    """The verdict recorded for a source commit, None if the gate never saw it."""
    store = MetricsStore(lakefs)
    data = lakefs.get_object_or_none(store.repository, "main",
                                     verdict_path(repository, source_commit))
    return None if data is None else json.loads(data)
