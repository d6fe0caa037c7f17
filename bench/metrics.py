"""Benchmark: adding one metric to a processed repository, against recomputing every metric.

Run ``python -m bench.metrics [--images N] [--json PATH]`` (default N = 10,000). It
starts its own stack (lakeFS over the stack's S3 server, a Prefect server, on free
loopback ports) and a Dask LocalCluster of one single-threaded worker per core, and
stops them after. Each run is ``clearlake classify`` in a fresh process, as a user
runs it (`bench.pipeline.Bench.run_flow`).

1. **Processed repository.** N distinct 1024 × 768 JPEGs (`bench.pipeline.make_images`)
   are committed and the flow runs: every built-in metric is computed once per image.
2. **Add one metric.** A scripts repository gets one module with one metric
   (``rms_contrast_score``); the image repository pins it in `_clearlake/config.yaml`
   (one commit) and the flow runs. Reported: its run time, and the computations per
   metric (the built-ins must show zero, the new metric N).
3. **Docstring-only change of the scripts metric.** A new scripts commit whose module
   differs only in a docstring and a comment, pinned: the run's computations (must be
   zero).
4. **Docstring-only change of a built-in metric.** `clearlake/quality/metrics.py`
   copied with one metric's docstring reworded, loaded as the module it replaces (as
   a process running the edited file would), and the whole repository measured with
   that metric set through `pipeline.measure_batch` against the same store: the
   computations (must be zero) and its time.
5. **Full recompute (the baseline).** What any metric change cost before metrics had
   versions of their own: the same flow, built-ins + the new metric, on a branch
   with a metrics store that has never seen the images (a fresh store repository,
   set on the workers), so every metric of every image is computed.

The ratio is run time (2) / run time (5), from one run; both runs read every image
(the new metric needs the pixels), so the gain is the metrics not computed again.
Figures measured on a shared machine vary with its load: the load average is
reported with them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cleanup
from bench.pipeline import Bench, make_images

SCRIPTS_REPOSITORY = "bench-scripts"
NEW_METRIC = "rms_contrast_score"
SCRIPT = '''
"""A metric kept in the scripts repository."""

from clearlake.quality.registry import metric


@metric("rms_contrast_score")
def rms_contrast(image):
    """{doc}"""
    # {comment}
    return float(image.grey.std())
'''


def _publish(bench: Bench, doc: str, comment: str) -> str:
    bench.lakefs.upload_object(SCRIPTS_REPOSITORY, "main", "contrast.py",
                               SCRIPT.format(doc=doc, comment=comment).encode())
    return bench.lakefs.commit(SCRIPTS_REPOSITORY, "main", f"contrast metric: {doc}")


def _pin(bench: Bench, repository: str, commit: str, branch: str = "main") -> None:
    pin = f"lakefs://{SCRIPTS_REPOSITORY}/main@{commit}"
    bench.lakefs.upload_object(repository, branch, "_clearlake/config.yaml",
                               f"scripts: {pin}\n".encode())
    bench.lakefs.commit(repository, branch, "pin the metrics scripts")


def _run(bench: Bench, repository: str, branch: str, store: str) -> dict[str, Any]:
    run = bench.run_flow(repository, branch, 256, store, prefix="images/")
    if run["status"] != "merged":
        raise SystemExit(f"the run on {branch} ended {run['status']}: {run['error']}")
    summary = {k: run[k] for k in ("run_s", "process_wall_s", "counts")}
    summary["metrics_computed"] = run["metrics_computed"]
    summary["load_average"] = os.getloadavg()
    return summary


def _docstring_edited_builtin(scratch: Path, name: str) -> Any:
    """The built-in metric `name` from a copy of metrics.py whose docstring for it is
    reworded, loaded under the real module's name (as a process would see the edited
    file); the real module stays in place."""
    from clearlake.quality import metrics
    from clearlake.quality.registry import Metric

    source = Path(metrics.__file__).read_text()
    anchor = f"def {name}(image: DecodedImage) -> float:\n    \"\"\""
    if anchor not in source:
        raise SystemExit(f"cannot find the docstring of {name} in {metrics.__file__}")
    edited = source.replace(anchor, anchor + "(Reworded for the benchmark.) ", 1)
    path = scratch / "edited_metrics.py"
    path.write_text(edited)
    spec = importlib.util.spec_from_file_location("clearlake.quality.metrics", path)
    module = importlib.util.module_from_spec(spec)
    real = sys.modules["clearlake.quality.metrics"]
    sys.modules["clearlake.quality.metrics"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["clearlake.quality.metrics"] = real
    return Metric.of(name, getattr(module, name), "built-in (docstring edited)")


def _builtin_docstring_change(bench: Bench, repository: str, scratch: Path) -> dict[str, Any]:
    from clearlake import pipeline
    from clearlake.metrics_store import MetricsStore
    from clearlake.quality.registry import MetricSet, builtin_metrics

    name = "edge_width_score"
    edited = _docstring_edited_builtin(scratch, name)
    metric_set = MetricSet(edited if m.name == name else m for m in builtin_metrics())
    commit = bench.lakefs.head(repository, "main")
    datums = [pipeline.Datum(o.path, o.checksum, o.size)
              for o in bench.lakefs.list_objects(repository, commit, "images/")]
    store = MetricsStore(bench.lakefs, "clearlake-metrics")
    started = time.perf_counter()
    measured = []
    for batch in pipeline.batches(datums, 256):
        measured += pipeline.measure_batch(bench.lakefs, store, repository, commit, batch,
                                           "bench-docstring", presigned=True,
                                           metric_set=metric_set)
    return {"metric": name, "version_unchanged": edited.version == builtin_metrics()[name].version,
            "images": len(measured), "seconds": time.perf_counter() - started,
            "metrics_computed": pipeline.computations(measured),
            "reused": sum(m.origin == "reused" for m in measured)}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    jobs = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="clearlake-bench-metrics-"))
    bench = Bench(scratch / "home", scratch, jobs, "images/")
    figures: dict[str, Any] = {"images": args.images, "cores": jobs}
    try:
        bench.up()
        os.environ["CLEARLAKE_SCRIPTS_REPOSITORIES"] = SCRIPTS_REPOSITORY  # opted in
        bench.start_cluster()
        paths = make_images(scratch / "images", range(args.images), jobs)
        repository = "bench-metrics"
        bench.upload(repository, {f"images/{p.name}": p for p in paths}, "images")
        bench.lakefs.create_repository(SCRIPTS_REPOSITORY)
        print(f"processing {args.images} images …", flush=True)
        figures["processed"] = _run(bench, repository, "main", "clearlake-metrics")

        before_pin = bench.lakefs.head(repository, "main")
        _pin(bench, repository, _publish(bench, "RMS contrast.", "the grey levels' spread"))
        print("adding one metric …", flush=True)
        figures["add_one_metric"] = _run(bench, repository, "main", "clearlake-metrics")

        _pin(bench, repository, _publish(bench, "RMS contrast (reworded).", "reworded too"))
        print("a docstring-only change of the scripts metric …", flush=True)
        figures["scripts_docstring_change"] = _run(bench, repository, "main",
                                                   "clearlake-metrics")

        print("a docstring-only change of a built-in metric …", flush=True)
        figures["builtin_docstring_change"] = _builtin_docstring_change(bench, repository,
                                                                        scratch)

        # Baseline: the same images, every metric computed: a branch from before the pin
        # pinning the same scripts, against a store that has never seen the images.
        bench.lakefs.create_branch(repository, "recompute", before_pin)
        _pin(bench, repository, bench.lakefs.get_commit(SCRIPTS_REPOSITORY, "main").id,
             branch="recompute")
        print("full recompute of every metric (baseline) …", flush=True)
        figures["full_recompute"] = _run(bench, repository, "recompute", "bench-fresh-store")
        figures["ratio_add_one_to_full_recompute"] = (
            figures["add_one_metric"]["run_s"] / figures["full_recompute"]["run_s"])
    finally:
        bench.down()
    return figures


def report(f: dict[str, Any]) -> None:
    def line(label: str, run: dict[str, Any]) -> None:
        computed = run["metrics_computed"]
        print(f"  {label:<44} {run['run_s']:8.1f} s   load {run['load_average'][0]:.1f}   "
              f"computations: {json.dumps(computed, sort_keys=True) if computed else 'none'}")

    print(f"\n{f['images']} images of 1024 × 768 px, {f['cores']} cores")
    line("processed (every built-in, once)", f["processed"])
    line(f"add one metric ({NEW_METRIC}, scripts)", f["add_one_metric"])
    line("docstring-only change, scripts metric", f["scripts_docstring_change"])
    b = f["builtin_docstring_change"]
    print(f"  {'docstring-only change, built-in ' + b['metric']:<44} {b['seconds']:8.1f} s   "
          f"version unchanged: {b['version_unchanged']}   computations: "
          f"{json.dumps(b['metrics_computed']) if b['metrics_computed'] else 'none'} "
          f"({b['reused']} of {b['images']} reused)")
    line("full recompute of every metric (baseline)", f["full_recompute"])
    print(f"\nadding one metric / full recompute: ratio "
          f"{f['ratio_add_one_to_full_recompute']:.2f} (one run; the machine's load above)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images in the repository")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = benchmark(args)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    cleanup.main(main)
