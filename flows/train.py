"""The `train-classifier` flow: fit the model on labelled images kept in lakeFS."""

from __future__ import annotations

from typing import Any

from clearlake.flows.classify import measure_on_dask, resolve_dask_address, run_metrics
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from clearlake import pipeline, scripts, training
from clearlake.lakefs import LakeFS
from clearlake.metrics_store import MetricsStore
from clearlake.quality.classifier import DEFAULT_FEATURES


@flow(name="train-classifier", log_prints=True)
def train_classifier(
    repository: str,
    ref: str,
    labels_path: str,
    image_prefix: str = "",
    batch_size: int = pipeline.DEFAULT_BATCH_SIZE,
    dask_address: str | None = None,
    dask_cluster: str | None = None,
    features: list[str] | None = None,
) -> dict[str, Any]:
    """Train the Naive Bayes model on a labels file and commit it under `_clearlake/model/`.

    Metrics of images measured before (anywhere) are reused; the rest are measured on
    the Dask cluster. Committing the model triggers a run that relabels every image
    of the branch from its stored metrics, without decoding any.

    Args:
        repository: the lakeFS repository.
        ref: the branch holding the labels and images; the model is committed to it.
        labels_path: CSV with columns path,label[,sublabel][,source].
        image_prefix: folder the CSV's paths are relative to.
        batch_size: images per Dask task.
        dask_address: an existing Dask scheduler (default as for classify-commit).
        dask_cluster: instead of `dask_address`, the name of a saved `DaskCluster` block.
        features: the metrics the model reads, any subset of the metrics available to the
            branch (built-ins, entry points, its pinned scripts); default the packaged
            model's.
    """
    address = resolve_dask_address(dask_address, dask_cluster)
    logger = get_run_logger()
    run_id = str(flow_run.id or "local")
    lakefs = LakeFS()
    commit = lakefs.head(repository, ref)
    labelled = training.parse_labels(
        lakefs.get_object(repository, commit, labels_path), f"{repository}@{ref}:{labels_path}")
    datums = training.datums_for(lakefs, repository, commit, labelled, image_prefix)
    pin = scripts.configured(lakefs, repository, commit)
    available = run_metrics(lakefs, None, str(pin) if pin else None)
    chosen = tuple(features or DEFAULT_FEATURES)
    metric_set = available.select(chosen)  # only what the model reads is computed
    measured = [m for batch in measure_on_dask(repository, commit, datums, batch_size, run_id,
                                               address, metric_set=metric_set,
                                               scripts_pin=str(pin) if pin else None)
                for m in batch]
    pipeline.remember(MetricsStore(lakefs), measured, f"training on {repository}@{commit[:12]}")
    model = training.fit(labelled, measured, image_prefix, features=chosen, metric_set=metric_set)
    model_commit = training.commit_model(lakefs, repository, ref, model, labels_path, commit,
                                         run_id)
    scores = model.info["cross_validation"]
    logger.info("model %s committed at %s; cross-validated scores: %s", model.id,
                model_commit[:12], scores)
    return {"model_id": model.id, "model_commit": model_commit, "images": len(measured),
            "computed": sum(m.origin == "computed" for m in measured), "scores": scores}
