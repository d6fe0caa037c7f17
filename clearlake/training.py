"""Training a model from a labels file kept in lakeFS, with metrics reused from the store."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

from clearlake.lakefs import LakeFS
from clearlake.layout import MODEL_PATH, SCORES_PATH
from clearlake.pipeline import Datum, Measured
from clearlake.quality.classifier import DEFAULT_FEATURES, Model, train
from clearlake.quality.registry import MetricSet
from clearlake.transaction import Transaction


@dataclass(frozen=True)
class LabelledImage:
    """One row of a labels file: `path,label[,sublabel][,source]`."""

    path: str
    label: str
    sublabel: str
    source: str


def parse_labels(data: bytes, where: str) -> list[LabelledImage]:
    """Rows of a labels CSV; `source` (the source photograph) groups the CV folds.

    Raises:
        ValueError: missing columns or no rows, naming `where`.
    """
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    columns = set(reader.fieldnames or ())
    if not {"path", "label"} <= columns:
        raise ValueError(f"{where} needs columns path and label (has {sorted(columns)})")
    rows = [
        LabelledImage(r["path"], r["label"], r.get("sublabel") or r["label"],
                      r.get("source") or r["path"])
        for r in reader
    ]
    if not rows:
        raise ValueError(f"{where} lists no images")
    return rows


def datums_for(
    lakefs: LakeFS, repository: str, ref: str, labelled: Sequence[LabelledImage], prefix: str = ""
) -> list[Datum]:
    """Checksum and size of every labelled image (one stat each, no reads)."""
    datums = []
    for item in labelled:
        info = lakefs.stat_object(repository, ref, prefix + item.path)
        datums.append(Datum(info.path, info.checksum, info.size))
    return datums


def fit(
    labelled: Sequence[LabelledImage], measured: Sequence[Measured], prefix: str = "",
    *, features: Sequence[str] = DEFAULT_FEATURES, metric_set: MetricSet | None = None,
) -> Model:
    """Train on the images that decoded and have every metric in `features` (any subset of
    `metric_set`, the metrics they were measured with); the others are left out.

    Raises:
        ValueError: no labelled image could be measured, or a feature is unknown.
    """
    by_path = {m.path: m for m in measured}
    usable = [(item, by_path[prefix + item.path]) for item in labelled
              if all(f in (by_path[prefix + item.path].analysis.metrics or {})
                     for f in features)]
    if not usable:
        raise ValueError("no labelled image could be decoded and measured")
    return train(
        [m.analysis.metrics for _, m in usable],
        [item.label for item, _ in usable],
        [item.source for item, _ in usable],
        sublabels=[item.sublabel for item, _ in usable],
        checksums=[m.analysis.sha256 for _, m in usable],
        features=features,
        metric_set=metric_set,
    )


def commit_model(
    lakefs: LakeFS, repository: str, branch: str, model: Model, labels_path: str,
    labels_commit: str, run_id: str,
) -> str:
    """Commit the model and its scores under `_clearlake/model/`; return the merge commit.

    This is an ordinary commit, not a results commit: it triggers a run, which
    relabels every image from stored metrics with the new model.
    """
    with Transaction(lakefs, repository, branch) as tx:
        tx.upload(MODEL_PATH, model.to_json().encode())
        tx.upload(SCORES_PATH, json.dumps(model.info, indent=2, default=str).encode())
        return tx.commit(
            f"clearlake: model {model.id} trained on {labels_path}",
            {"clearlake.model_id": model.id, "clearlake.labels_path": labels_path,
             "clearlake.labels_commit": labels_commit, "clearlake.run_id": run_id},
        )
