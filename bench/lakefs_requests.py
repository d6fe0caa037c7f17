"""Benchmark: what clearlake's lakeFS requests cost, each way against the one it replaced.

Run ``python -m bench.lakefs_requests [--store N] [--repeat K] [--blockstore s3|local]``.
On a stack this benchmark starts itself (state in a temporary folder), by default the
stack's default profile: lakeFS over the S3 blockstore of the stack's own S3 server
(SeaweedFS). CPU is counted in three places: this process (the client), lakeFS's
process and the S3 server's (``weed mini``, one process); the S3 server's requests
come from its Prometheus counters (see ``bench/s3_metrics.py``).

1. **Single-object requests.** Client CPU per upload of a 1.2 kB document and per
   read of it, through the generated SDK and through ``LakeFS.upload_object`` /
   ``get_object`` (plain ``http.client``); the ratio is clearlake's against the SDK's.
   lakeFS's own CPU per request is reported beside it.
2. **Lookups.** A repository laid out like the metrics store's checksum map
   (``checksums/<md5>-<size>.json``, random keys) holds 0 and then N entries. For
   lookups of 8, 64, 256 and 2,048 keys that all miss (new images: what a run asks
   the store for each one), both ways of finding out what exists:

   - **one GET each**: the per-key lookup clearlake did before, on four threads, a
     404 meaning absent;
   - **``LakeFS.read_existing``**: lakeFS's listing walked over the sorted keys,
     falling back to one GET each where the listing is too dense to be worth it.

3. **Image reads.** Client, lakeFS and S3 server CPU, wall time and S3 requests per
   read of a 120 kB object (a 1024-px JPEG's size), one after another, by each way a
   batch could read its bytes: the SDK's ``get_object``; ``LakeFS.get_object`` (the
   object API, what the flow uses on the local blockstore); lakeFS's S3 gateway
   through boto3's ``get_object`` and through prefect-aws's ``S3Bucket.read_path``
   (boto3's transfer manager: a HEAD, then ranged GETs); and, where the blockstore
   presigns (``GET /config/storage`` ``pre_sign_support``), the presigned path the
   flow uses: ``LakeFS.presigned_urls`` for 256 paths at a time (listing pages with
   ``presign=true``), then ``LakeFS.read_presigned`` (a GET straight from the S3
   server), and, for comparison, one ``stat_object(presign=True)`` per image before
   its GET. Every way's bytes are checked against what was uploaded.

Lookups are timed ``--repeat`` times (median reported; a sample repeats a small lookup
until it has asked for 2,048 keys, and is divided back to one lookup), as wall time
and as CPU seconds of this process (the client) plus lakeFS's process; the ratio is
the walk's CPU against one GET each. It also reports the unit costs behind
``clearlake.lakefs.ENTRIES_PER_LOOKUP``: client + lakeFS CPU per 404 GET and per
entry of a listing page of 1,000 (parsed as ``read_existing`` parses it), and the
client's CPU per entry when the SDK's generated models parse the page instead.
Nothing is asserted; the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lakefs_sdk

from bench import cleanup
from bench.s3_metrics import S3Metrics, difference
from clearlake.lakefs import LakeFS
from clearlake.metrics_store import checksum_path

REPOSITORY = "bench-requests"
LOOKUPS = (8, 64, 256, 2048)
SAMPLE_KEYS = 2048
SINGLE_REQUESTS = 2000
IMAGE_READS = 500
IMAGE_BYTES = 120_000
# Images per `presigned_urls` call: the flow asks once per batch (at most 256 images).
PRESIGN_BATCH = 256


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _random_paths(count: int) -> list[str]:
    return [checksum_path(secrets.token_hex(16), 100_000 + i) for i in range(count)]


def _one_get_each(lakefs: LakeFS, paths: list[str]) -> dict[str, bytes]:
    """The per-key lookup clearlake did before `read_existing`: a GET each, 404 = absent."""
    return lakefs.read_each(REPOSITORY, "main", paths, threads=4)


class _Meter:
    """Wall time and client, lakeFS and S3 server CPU seconds of a call (and, with
    `s3_metrics`, the S3 server's requests during it)."""

    def __init__(self, lakefs_pid: int, s3_pid: int | None = None,
                 s3_metrics: S3Metrics | None = None) -> None:
        self.lakefs_pid = lakefs_pid
        self.s3_pid = s3_pid
        self.s3_metrics = s3_metrics
        self.last_s3: dict[str, Any] = {}

    def _s3_cpu(self) -> float:
        return _cpu_of(self.s3_pid) if self.s3_pid else 0.0

    def __call__(self, call: Callable[[], Any]) -> dict[str, float]:
        requests = self.s3_metrics.snapshot() if self.s3_metrics else None
        s3 = self._s3_cpu()
        client, server, wall = time.process_time(), _cpu_of(self.lakefs_pid), time.perf_counter()
        call()
        result = {"wall_s": time.perf_counter() - wall,
                  "client_cpu_s": time.process_time() - client,
                  "lakefs_cpu_s": _cpu_of(self.lakefs_pid) - server,
                  "s3_cpu_s": self._s3_cpu() - s3}
        if self.s3_metrics and requests is not None:
            self.last_s3 = difference(self.s3_metrics.snapshot(), requests)
        return result


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _compare(lakefs: LakeFS, meter: _Meter, lookups: int, repeat: int) -> dict[str, Any]:
    """Both ways, interleaved, over fresh missing keys each time; each sample repeats the
    lookup until it has asked for `SAMPLE_KEYS` keys (lakeFS's CPU clock ticks in 10 ms)."""
    ways = {"one_get_each": lambda paths: _one_get_each(lakefs, paths),
            "read_existing": lambda paths: lakefs.read_existing(REPOSITORY, "main", paths)}
    rounds = max(1, SAMPLE_KEYS // lookups)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for _ in range(repeat):
        for name, way in ways.items():
            keys = [_random_paths(lookups) for _ in range(rounds)]
            sample = meter(lambda way=way, keys=keys: [way(paths) for paths in keys])
            runs[name].append({k: v / rounds for k, v in sample.items()})
    result: dict[str, Any] = {name: _median(r) for name, r in runs.items()}
    cpu = {name: r["client_cpu_s"] + r["lakefs_cpu_s"] + r["s3_cpu_s"]
           for name, r in result.items()}
    result["cpu_ratio"] = cpu["read_existing"] / cpu["one_get_each"]
    result["wall_ratio"] = result["read_existing"]["wall_s"] / result["one_get_each"]["wall_s"]
    return result


def _single_objects(lakefs: LakeFS, meter: _Meter, count: int) -> dict[str, Any]:
    """Client and lakeFS CPU per upload and per read, through the SDK and through `LakeFS`."""
    document = b"x" * 1200

    def sdk_upload(path: str) -> None:
        lakefs.client.call_api(
            "/repositories/{repository}/branches/{branch}/objects", "POST",
            path_params={"repository": REPOSITORY, "branch": "main"},
            query_params=[("path", path)],
            header_params={"Content-Type": "application/octet-stream",
                           "Accept": "application/json"},
            body=document, response_types_map={"201": "ObjectStats"}, auth_settings=["basic_auth"],
            _return_http_data_only=True)

    ways = {
        "sdk": (sdk_upload, lambda path: lakefs.objects.get_object(REPOSITORY, "main", path)),
        "clearlake": (lambda path: lakefs.upload_object(REPOSITORY, "main", path, document),
                      lambda path: lakefs.get_object(REPOSITORY, "main", path)),
    }
    result: dict[str, Any] = {}
    for name, (upload, read) in ways.items():
        paths = [f"single/{name}/{i:05d}.json" for i in range(count)]
        uploads = meter(lambda upload=upload, paths=paths: [upload(p) for p in paths])
        reads = meter(lambda read=read, paths=paths: [read(p) for p in paths])
        result[name] = {f"{what}_{key}_ms": 1000 * run[key] / count
                        for what, run in (("upload", uploads), ("read", reads))
                        for key in ("client_cpu_s", "lakefs_cpu_s", "s3_cpu_s")}
    for what in ("upload", "read"):
        result[f"{what}_client_ratio"] = (result["clearlake"][f"{what}_client_cpu_s_ms"]
                                          / result["sdk"][f"{what}_client_cpu_s_ms"])
    return result


def _image_reads(
    lakefs: LakeFS, meter: _Meter, count: int, presigns: bool
) -> dict[str, Any]:
    """Client, lakeFS and S3 server CPU, wall time and S3 requests per read of an
    image-sized object, each way; every way's bytes are checked."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    settings = lakefs.settings
    images = {f"images/{i:05d}.jpg": os.urandom(IMAGE_BYTES) for i in range(count)}
    lakefs.upload_many(REPOSITORY, "main", images.items())
    commit = lakefs.commit(REPOSITORY, "main", f"{count} image-sized objects")
    credentials = AwsCredentials(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key.get_secret_value(),
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(
            endpoint_url=settings.endpoint, config={"s3": {"addressing_style": "path"}}))
    s3 = credentials.get_s3_client()
    bucket = S3Bucket(bucket_name=REPOSITORY, credentials=credentials)

    def each(read: Callable[[str], bytes]) -> Callable[[list[str]], dict[str, bytes]]:
        return lambda paths: {path: read(path) for path in paths}

    def presigned_by_listing(paths: list[str]) -> dict[str, bytes]:
        """What a batch does: its URLs from listing pages, then a GET from the S3 server each."""
        read: dict[str, bytes] = {}
        for first in range(0, len(paths), PRESIGN_BATCH):
            chunk = paths[first : first + PRESIGN_BATCH]
            urls = lakefs.presigned_urls(REPOSITORY, commit, chunk)
            read.update((p, lakefs.read_presigned(urls[p], REPOSITORY, commit, p))
                        for p in chunk)
        return read

    def presigned_by_stat(path: str) -> bytes:
        return lakefs.read_presigned(lakefs.presign(REPOSITORY, commit, path), REPOSITORY,
                                     commit, path)

    ways: dict[str, Callable[[list[str]], dict[str, bytes]]] = {
        "sdk": each(lambda path: bytes(lakefs.objects.get_object(REPOSITORY, commit, path))),
        "clearlake": each(lambda path: lakefs.get_object(REPOSITORY, commit, path)),
        "s3_gateway_boto3": each(lambda path: s3.get_object(
            Bucket=REPOSITORY, Key=f"{commit}/{path}")["Body"].read()),
        "s3_bucket_block": each(lambda path: bucket.read_path(f"{commit}/{path}")),
    }
    if presigns:
        ways["presigned_listing"] = presigned_by_listing
        ways["presigned_stat"] = each(presigned_by_stat)
    result: dict[str, Any] = {}
    paths = list(images)
    for name, read in ways.items():
        read(paths[:2])  # warm: clients, connections
        got: dict[str, bytes] = {}
        run = meter(lambda read=read, got=got: got.update(read(paths)))
        wrong = [path for path, data in images.items() if got.get(path) != data]
        if wrong:
            raise RuntimeError(f"{name} read {len(wrong)} objects wrong, e.g. {wrong[0]}")
        result[name] = {key.replace("_s", "_ms"): 1000 * value / count
                        for key, value in run.items()}
        if meter.last_s3:
            result[name]["s3_requests_per_read"] = meter.last_s3["requests"] / count
            result[name]["s3_gets_per_read"] = meter.last_s3["gets"] / count
            result[name]["s3_by_kind"] = meter.last_s3["by_kind"]
    ours = result["clearlake"]

    def cpu(r: dict[str, float]) -> float:
        return r["client_cpu_ms"] + r["lakefs_cpu_ms"] + r["s3_cpu_ms"]

    for name in ways:
        result[name]["cpu_ratio_to_clearlake"] = cpu(result[name]) / cpu(ours)
        result[name]["wall_ratio_to_clearlake"] = result[name]["wall_ms"] / ours["wall_ms"]
    try:
        stats = lakefs.objects.stat_object(REPOSITORY, commit, next(iter(images)), presign=True)
        result["presigned"] = f"gives {stats.physical_address.split('://')[0]}:// addresses"
    except lakefs_sdk.ApiException as error:
        result["presigned"] = f"refused: {error.status} {(error.body or error.reason).strip()}"
    return result


def _unit_costs(lakefs: LakeFS, meter: _Meter) -> dict[str, float]:
    """CPU per 404 GET and per listed entry (a store of at least 1,000 entries)."""
    misses = _random_paths(500)
    get = meter(lambda: [_one_get_each(lakefs, [p]) for p in misses])
    pages = 20
    listing = meter(lambda: [lakefs._list_entries(REPOSITORY, "main", "checksums/", after="",
                                                amount=1000) for _ in range(pages)])
    modelled = meter(lambda: [lakefs.objects.list_objects(REPOSITORY, "main", prefix="checksums/",
                                                          amount=1000) for _ in range(pages)])
    per_get = (get["client_cpu_s"] + get["lakefs_cpu_s"] + get["s3_cpu_s"]) / len(misses)
    per_entry = ((listing["client_cpu_s"] + listing["lakefs_cpu_s"] + listing["s3_cpu_s"])
                 / (pages * 1000))
    return {"get_404_cpu_ms": 1000 * per_get, "listed_entry_cpu_ms": 1000 * per_entry,
            "entries_per_get": per_get / per_entry,
            "listed_entry_client_cpu_ms": 1000 * listing["client_cpu_s"] / (pages * 1000),
            "modelled_entry_client_cpu_ms": 1000 * modelled["client_cpu_s"] / (pages * 1000)}


def benchmark(store_size: int, repeat: int, blockstore: str = "s3") -> dict[str, Any]:
    """Every measurement on a stack of `blockstore` ('s3', the default, or 'local')."""
    from clearlake.config import lakefs_settings
    from clearlake.stack.install import install_lakefs
    from clearlake.stack.services import Stack, free_loopback_ports

    figures: dict[str, Any] = {"load_before": os.getloadavg(), "store": store_size,
                               "repeat": repeat, "blockstore": blockstore, "by_store_size": {}}
    install_lakefs(report=lambda line: None)
    with tempfile.TemporaryDirectory(prefix="clearlake-bench-requests-") as home:
        stack = Stack(home=Path(home), ports=free_loopback_ports(), blockstore=blockstore)
        try:
            stack.up(report=lambda line: None, deploy=False)
            lakefs = LakeFS(lakefs_settings(Path(home)))
            pids = {s.name: s.pid for s in stack.status()}
            s3 = blockstore == "s3"
            meter = _Meter(pids["lakefs"], pids.get("s3") if s3 else None,
                           S3Metrics(stack.ports["s3"]) if s3 else None)
            lakefs.create_repository(REPOSITORY)
            presigns = bool(lakefs.storage_config().pre_sign_support)
            figures["pre_sign_support"] = presigns
            figures["single"] = _single_objects(lakefs, meter, SINGLE_REQUESTS)
            figures["image_reads"] = _image_reads(lakefs, meter, IMAGE_READS, presigns)
            print("image reads: done", flush=True)
            for size in (0, store_size):
                lakefs.upload_many(REPOSITORY, "main",
                                   ((p, b'{"sha256":""}') for p in _random_paths(size)))
                if size:
                    lakefs.commit(REPOSITORY, "main", f"{size} entries")
                figures["by_store_size"][size] = {
                    n: _compare(lakefs, meter, n, repeat) for n in LOOKUPS}
                print(f"store of {size}: done", flush=True)
            if store_size >= 1000:
                figures["unit"] = _unit_costs(lakefs, meter)
        finally:
            with cleanup.deferred():
                stack.down(report=lambda line: None)
    figures["load_after"] = os.getloadavg()
    return figures


def _cpu3(r: dict[str, float], suffix: str = "_s") -> float:
    return r[f"client_cpu{suffix}"] + r[f"lakefs_cpu{suffix}"] + r[f"s3_cpu{suffix}"]


def report(figures: dict[str, Any]) -> None:
    """Print the figures as Markdown tables."""
    print(f"\nblockstore {figures['blockstore']}; load average before "
          f"{' / '.join(f'{v:.1f}' for v in figures['load_before'])}, after "
          f"{' / '.join(f'{v:.1f}' for v in figures['load_after'])}; "
          f"median of {figures['repeat']}")
    single = figures["single"]
    print("| per request (ms of CPU) | SDK client | clearlake client | ratio | lakeFS "
          "| S3 server |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for what in ("upload", "read"):
        sdk, ours = single["sdk"], single["clearlake"]
        print(f"| {what} of 1.2 kB | {sdk[f'{what}_client_cpu_s_ms']:.2f} | "
              f"{ours[f'{what}_client_cpu_s_ms']:.2f} | {single[f'{what}_client_ratio']:.2f} | "
              f"{ours[f'{what}_lakefs_cpu_s_ms']:.2f} | {ours[f'{what}_s3_cpu_s_ms']:.2f} |")
    reads = figures["image_reads"]
    print(f"\n| read of {IMAGE_BYTES // 1000} kB, per read | wall ms | client CPU ms | "
          "lakeFS CPU ms | S3 server CPU ms | CPU ratio | wall ratio | S3 requests |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in reads.items():
        if isinstance(r, dict):
            requests = r.get("s3_requests_per_read")
            print(f"| {name} | {r['wall_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
                  f"{r['lakefs_cpu_ms']:.2f} | {r['s3_cpu_ms']:.2f} | "
                  f"{r['cpu_ratio_to_clearlake']:.2f} | {r['wall_ratio_to_clearlake']:.2f} | "
                  f"{'-' if requests is None else f'{requests:.2f}'} |")
    print(f"(ratios against `clearlake`, lakeFS's object API; CPU = client + lakeFS + S3 server)"
          f"\npresigned URLs: the blockstore {reads['presigned']}")
    print()
    print("| store entries | lookups (all miss) | one GET each: wall / CPU ms | read_existing: "
          "wall / CPU ms | CPU ratio | wall ratio |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, by_lookups in figures["by_store_size"].items():
        for n, r in by_lookups.items():
            cells = [f"{1000 * r[w]['wall_s']:.1f} / {1000 * _cpu3(r[w]):.1f}"
                     for w in ("one_get_each", "read_existing")]
            print(f"| {size} | {n} | {cells[0]} | {cells[1]} | {r['cpu_ratio']:.2f} | "
                  f"{r['wall_ratio']:.2f} |")
    if "unit" in figures:
        u = figures["unit"]
        print(f"\nCPU (client + lakeFS + S3 server): a 404 GET {u['get_404_cpu_ms']:.2f} ms, a "
              f"listed entry {u['listed_entry_cpu_ms']:.4f} ms: one GET ≈ "
              f"{u['entries_per_get']:.0f} entries")
        print(f"client CPU per listed entry: {u['listed_entry_client_cpu_ms']:.4f} ms parsed as "
              f"JSON, {u['modelled_entry_client_cpu_ms']:.4f} ms through the SDK's models")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=int, default=5000, help="entries in the larger store")
    parser.add_argument("--repeat", type=int, default=3, help="runs per way (median reported)")
    parser.add_argument("--blockstore", choices=("s3", "local"), default="s3",
                        help="the stack's blockstore (default s3, the stack's default)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = parser.parse_args(argv)
    figures = benchmark(args.store, args.repeat, args.blockstore)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    cleanup.main(main)
