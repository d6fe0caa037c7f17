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
(computing any missing ones now), and allows or refuses with a readable reason.
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

from clearlake import layout, pipeline
from clearlake.layout import POLICY_PATH
from clearlake.metrics_store import MetricsStore
from clearlake.provenance import signing_key, verified_record
from clearlake.store import LakeFS

GATE_RECORDS = "gates"


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

    def explain(self) -> str:
        """The text lakeFS keeps in the hook's log (and `clearlake merge` prints)."""
        head = (f"clearlake gate: {'ALLOWED' if self.allowed else 'REFUSED'} merge of "
                f"{self.source_commit[:12]} into {self.destination} "
                f"({self.checked} incoming images checked against "
                f"{POLICY_PATH}@{self.destination_commit[:12]})")
        return "\n".join([head, *(f"  - {reason}" for reason in self.reasons)]) + "\n"


def load_policy(lakefs: LakeFS, repository: str, ref: str) -> Policy | None:
    """The policy at `ref`, None when there is none."""
    text = lakefs.get_object_or_none(repository, ref, POLICY_PATH)
    return None if text is None else Policy.parse(text.decode())


def incoming_labels(
    lakefs: LakeFS, repository: str, source_commit: str, destination_commit: str,
    *, key: bytes | None = None,
) -> dict[str, str]:
    """Label of every image the merge brings in, from stored metrics where possible.

    A record on the source is used only if clearlake signed it for this image's path and
    checksum (`key`, default `signing_key()`); every other image is measured, reusing
    the metrics store's analysis of its bytes where there is one.
    """
    key = key if key is not None else signing_key()
    inputs = pipeline.Inputs()
    changes = [
        c for c in pipeline.input_changes(lakefs, repository, destination_commit, source_commit,
                                          inputs, three_dot=True)
        if c.change != "removed" and inputs.matches(c.path)
    ]
    model, _ = pipeline.load_model(lakefs, repository, destination_commit)
    known: dict[str, dict[str, Any]] = {}
    missing: list[pipeline.Datum] = []
    for change in changes:
        stored = lakefs.get_object_or_none(repository, source_commit,
                                           layout.record_path(change.path))
        record = verified_record(stored, key, path=change.path, checksum=change.checksum)
        if record is not None:
            known[change.path] = record
        else:
            missing.append(pipeline.Datum(change.path, change.checksum, change.size))
    if missing:
        measured = pipeline.measure_batch(lakefs, MetricsStore(lakefs), repository,
                                          source_commit, missing, run_id="gate")
        # Only the metrics are needed: every image is labelled once, below.
        for m in measured:
            known[m.path] = {"outcome": m.analysis.outcome, "metrics": m.analysis.metrics}
    rows = {p: r for p, r in known.items() if r["outcome"] == "ok" and r["metrics"]}
    predictions = model.predict([rows[p]["metrics"] for p in sorted(rows)])
    labels = {p: f"not decodable ({r['outcome']})" for p, r in known.items() if p not in rows}
    labels.update({p: pred.label for p, pred in zip(sorted(rows), predictions, strict=True)})
    return dict(sorted(labels.items()))


def judge(policy: Policy, labels: dict[str, str]) -> list[str]:
    """Every rule the incoming images break (empty: allowed). Deterministic order."""
    reasons = []
    not_good = [p for p, label in labels.items() if label != "good"]
    if policy.max_not_good_percent is not None and labels:
        share = 100.0 * len(not_good) / len(labels)
        if share > policy.max_not_good_percent:
            reasons.append(
                f"{share:.1f} % of incoming images are not good (limit "
                f"{policy.max_not_good_percent:g} %): "
                + ", ".join(f"{p} ({labels[p]})" for p in not_good[:20])
                + (f" and {len(not_good) - 20} more" if len(not_good) > 20 else "")
            )
    for rule in policy.rules:
        broken = [p for p, label in labels.items()
                  if p.startswith(rule.prefix) and label in rule.forbid]
        if broken:
            reasons.append(
                f"no {'/'.join(rule.forbid)} image may enter {rule.prefix or 'the branch'}: "
                + ", ".join(f"{p} ({labels[p]})" for p in broken[:20])
                + (f" and {len(broken) - 20} more" if len(broken) > 20 else "")
            )
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
        verdict.labels = incoming_labels(lakefs, repository, source_commit, destination_commit)
        verdict.checked = len(verdict.labels)
        verdict.reasons = judge(policy, verdict.labels) or ["every incoming image passes"]
        verdict.allowed = verdict.reasons == ["every incoming image passes"]
    record_verdict(lakefs, verdict)
    return verdict


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
