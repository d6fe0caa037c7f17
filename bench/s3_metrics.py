"""The stack's S3 server as the benchmarks see it: its request counters and a fast uploader.

SeaweedFS's ``weed mini`` serves Prometheus metrics for all its parts (S3 gateway,
filer, volume server, master) on its admin server's HTTP port, with no extra flag:
``http://127.0.0.1:<admin.port>/metrics``, where ``admin.port`` is
``clearlake.stack.seaweedfs.internal_ports(s3_port)["admin.port"]``.
``SeaweedFS_s3_request_total{bucket,code,type}`` counts every S3 request by bucket,
status code and kind (GET, PUT, HEAD, LIST, …), including the GETs of presigned
URLs; ``SeaweedFS_s3_bucket_traffic_sent_bytes_total`` the bytes it sent. The
benchmarks read them before and after a step and report the difference.

`S3Uploader` puts many small objects straight into the S3 server with a minimal
SigV4 signer (``UNSIGNED-PAYLOAD``) over keep-alive ``http.client`` connections, one
per thread: about a tenth of boto3's client CPU per request, for set-ups that need
100,000 objects in the bucket before a lakeFS import.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import re
import threading
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class S3Metrics:
    """Request counters of a stack's SeaweedFS, read from its Prometheus endpoint.

    Args:
        s3_port: the stack's S3 port (`Stack.ports["s3"]`).
    """

    def __init__(self, s3_port: int) -> None:
        from clearlake.stack import seaweedfs

        admin = seaweedfs.internal_ports(s3_port)["admin.port"]
        self.url = f"http://127.0.0.1:{admin}/metrics"

    def snapshot(self) -> dict[str, float]:
        """S3 requests by 'bucket:type:code', and 'sent_bytes' / 'received_bytes'."""
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        counts: dict[str, float] = Counter()
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if not match:
                continue
            name, labels, value = match.group(1), dict(_LABEL.findall(match.group(2))), \
                float(match.group(3))
            if name == "SeaweedFS_s3_request_total":
                counts[f"{labels.get('bucket', '')}:{labels.get('type')}:"
                       f"{labels.get('code')}"] += value
            elif name == "SeaweedFS_s3_bucket_traffic_sent_bytes_total":
                counts["sent_bytes"] += value
            elif name == "SeaweedFS_s3_bucket_traffic_received_bytes_total":
                counts["received_bytes"] += value
        return dict(counts)


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, Any]:
    """What happened between two snapshots: requests by kind, totals, bytes."""
    by_kind = {key: int(after[key] - before.get(key, 0)) for key in sorted(after)
               if key not in ("sent_bytes", "received_bytes")
               and after[key] - before.get(key, 0) > 0}
    gets = sum(v for k, v in by_kind.items() if k.split(":")[1] == "GET")
    return {
        "requests": sum(by_kind.values()),
        "gets": gets,
        "gets_ok": sum(v for k, v in by_kind.items()
                       if k.split(":")[1] == "GET" and k.split(":")[2].startswith("2")),
        "puts": sum(v for k, v in by_kind.items() if k.split(":")[1] in ("PUT", "POST")),
        "by_kind": by_kind,
        "sent_mb": (after.get("sent_bytes", 0) - before.get("sent_bytes", 0)) / 1e6,
        "received_mb": (after.get("received_bytes", 0) - before.get("received_bytes", 0)) / 1e6,
    }


class S3Uploader:
    """PUTs of small objects straight into an S3 server, path-style, on `threads` threads.

    Args:
        endpoint: e.g. `http://127.0.0.1:PORT`.
        access_key_id: the S3 access key.
        secret_access_key: its secret.
        region: the region the server expects in signatures.
    """

    def __init__(self, endpoint: str, access_key_id: str, secret_access_key: str,
                 region: str = "us-east-1") -> None:
        self.netloc = urllib.parse.urlsplit(endpoint).netloc
        self.key_id = access_key_id
        self.secret = secret_access_key
        self.region = region
        self._local = threading.local()

    def _signing_key(self, day: str) -> bytes:
        key = ("AWS4" + self.secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    def _headers(self, method: str, path: str) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        canonical = "\n".join([
            method, path, "", f"host:{self.netloc}", "x-amz-content-sha256:UNSIGNED-PAYLOAD",
            f"x-amz-date:{stamp}", "", "host;x-amz-content-sha256;x-amz-date",
            "UNSIGNED-PAYLOAD"])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._signing_key(day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        return {"Host": self.netloc, "x-amz-date": stamp,
                "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                "Authorization": f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
                                 f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                                 f"Signature={signature}"}

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """PUT one object (raises on any answer but 2xx)."""
        path = "/" + urllib.parse.quote(f"{bucket}/{key}", safe="/-_.~")
        for attempt in (0, 1):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = http.client.HTTPConnection(
                    self.netloc, timeout=60)
            try:
                connection.request("PUT", path, body=data, headers=self._headers("PUT", path))
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
                continue
            if response.status >= 300:
                raise RuntimeError(f"PUT {path}: {response.status} {body[:300]!r}")
            return

    def put_many(self, bucket: str, items: Iterable[tuple[str, bytes]], threads: int = 8) -> int:
        """PUT every (key, bytes) of `items`; return the count."""
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return sum(1 for _ in pool.map(lambda item: self.put(bucket, *item), items))
