"""Where a Dask worker's CPU goes per image, against `analyse()` alone on the same bytes.

    .venv/bin/python -m bench.worker_path                  # 150 new images, batches of 50
    .venv/bin/python -m bench.worker_path --images 300 --batch 100

Starts a stack on free loopback ports (as `bench.pipeline` does), commits distinct JPEGs,
and times with `time.process_time` (this process's CPU, every thread) in this process:

- `analyse()` alone over bytes already in memory, SHA-256 included: the baseline;
- the worker's batch body, `flows.classify.measure_batch.fn` (a new LakeFS client,
  the metric set, presigned URLs, reads on 4 threads, store lookups, analyse, the
  documents and the returned dicts), on batches of new images: its ratio to the
  baseline is the worker path's own overhead;
- its pieces one by one: presigned URLs, presigned reads, SHA-256, store lookups,
  `Measured.to_dict`/`from_dict`, and the per-batch set-up;
- an empty batch run as prefect_dask runs a task on a worker (`run_task_sync` with the
  flow's serialized context, on a thread that holds no Prefect context), against the
  same call without the engine: the engine's CPU per task, paid once per batch.

CPU time, not wall time: on a shared machine the scheduler decides the wall clock.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.pipeline import IMAGE_PREFIX, Bench, make_images

REPOSITORY = "bench-worker-path"


def cpu_ms(action: Callable[[], Any], count: int = 1) -> float:
    """This process's CPU milliseconds for `action()`, divided by `count`."""
    started = time.process_time()
    action()
    return 1000 * (time.process_time() - started) / count


def measure(batch: int) -> dict[str, float]:
    """Every figure of the module docstring, in ms of CPU (per image unless named per batch)."""
    from clearlake.flows import classify
    from prefect import flow

    from clearlake import pipeline
    from clearlake.lakefs import LakeFS
    from clearlake.metrics_store import MetricsStore
    from clearlake.provenance import signing_key
    from clearlake.quality.analyse import analyse
    from clearlake.quality.registry import available
    from clearlake.quality.score import use_one_thread

    use_one_thread()  # as on a worker
    lakefs = LakeFS()
    MetricsStore(lakefs).ensure()
    commit = lakefs.head(REPOSITORY, "main")
    datums = pipeline.make_plan(lakefs, REPOSITORY, "main", commit=None,
                                inputs=pipeline.Inputs(), model_id="bench",
                                key=signing_key()).to_measure
    metric_set = available()
    spec = metric_set.spec()
    analyse(lakefs.get_object(REPOSITORY, commit, datums[0].path), metric_set=metric_set)

    first, rest = datums[:batch], datums[batch:]
    figures: dict[str, float] = {}
    urls: dict[str, str] = {}
    blobs: list[bytes] = []
    figures["presigned_urls"] = cpu_ms(lambda: urls.update(lakefs.presigned_urls(
        REPOSITORY, commit, [d.path for d in first])), len(first))
    figures["presigned_reads"] = cpu_ms(lambda: blobs.extend(
        lakefs.read_presigned(urls[d.path], REPOSITORY, commit, d.path) for d in first),
        len(first))
    sha256s: list[str] = []
    figures["sha256"] = cpu_ms(lambda: sha256s.extend(
        hashlib.sha256(b).hexdigest() for b in blobs), len(blobs))
    store = MetricsStore(lakefs)
    figures["store_lookups"] = cpu_ms(lambda: (
        store.sha256s_for((d.checksum, d.size) for d in first), store.documents(sha256s)),
        len(first))
    figures["analyse_alone"] = cpu_ms(lambda: [
        analyse(b, sha256=s, metric_set=metric_set) for b, s in zip(blobs, sha256s, strict=True)],
        len(blobs))
    figures["batch_setup_per_batch"] = cpu_ms(lambda: [
        classify.run_metrics(MetricsStore(LakeFS()).lakefs, spec, None) for _ in range(20)], 20)

    body = rest[: 2 * batch]
    returned: list[list[dict[str, Any]]] = []
    figures["worker_body"] = cpu_ms(lambda: [returned.append(classify.measure_batch.fn(
        REPOSITORY, commit, [vars(d) for d in body[i : i + batch]], "bench", presigned=True,
        metrics=spec)) for i in range(0, len(body), batch)], len(body))
    results = [m for r in returned for m in r]
    figures["to_dict_from_dict"] = cpu_ms(lambda: [
        pipeline.Measured.from_dict(m).to_dict() for m in results], len(results))

    @flow(name="bench-worker-path")
    def engine() -> None:
        # Empty batches: the per-batch set-up alone, as a plain call and as a task run
        # the way a Dask worker runs it (prefect_dask: `run_task_sync` with the flow's
        # serialized context, on a thread that holds no Prefect context or client).
        from prefect.context import serialize_context
        from prefect.task_engine import run_task_sync

        parameters = {"repository": REPOSITORY, "commit": commit, "datums": [],
                      "run_id": "bench", "presigned": True, "metrics": spec}
        context = serialize_context()

        def as_on_a_worker() -> None:
            state = run_task_sync(classify.measure_batch, parameters=parameters,
                                  context=context, return_type="state")
            assert state.is_completed(), state

        def batches(run: Callable[[], Any]) -> None:
            for _ in range(10):
                with ThreadPoolExecutor(max_workers=1) as thread:  # a fresh thread each
                    thread.submit(run).result()

        batches(as_on_a_worker)  # the engine's first tasks import what they use
        plain = cpu_ms(lambda: batches(lambda: classify.measure_batch.fn(**parameters)), 10)
        task = cpu_ms(lambda: batches(as_on_a_worker), 10)
        figures["prefect_engine_per_task"] = task - plain

    engine()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args(argv)
    if args.images < 3 * args.batch:
        parser.error(f"--images must be at least 3 × --batch ({3 * args.batch})")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-worker-path-") as tmp:
        scratch = Path(tmp)
        paths = make_images(scratch / "images", range(args.images), 2)
        bench = Bench(scratch / "home", scratch, 2, "")
        try:
            bench.up()
            os.environ["CLEARLAKE_METRICS_REPOSITORY"] = "bench-worker-path-metrics"
            bench.upload(REPOSITORY, {f"{IMAGE_PREFIX}{p.name}": p for p in paths}, "add")
            with temporary_settings(updates={PREFECT_API_URL: bench.stack.prefect_api_url}):
                figures = measure(args.batch)
        finally:
            bench.down()
    base = figures["analyse_alone"]
    print(f"CPU ms per image (batches of {args.batch}; load {load_before[0]:.1f} → "
          f"{os.getloadavg()[0]:.1f}):")
    for name, value in figures.items():
        unit = ("per batch" if name.endswith("per_batch")
                else "per task" if name.endswith("per_task") else "per image")
        print(f"  {name:26s} {value:8.2f} {unit}")
    print(f"  worker body / analyse alone: {figures['worker_body'] / base:.3f}")


if __name__ == "__main__":
    main()
