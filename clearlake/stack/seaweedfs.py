"""The stack's S3 server: SeaweedFS's all-in-one `weed mini`, with every port on loopback.

`weed mini` runs a master, a volume server, a filer, the S3 gateway and an admin
server in one process, each on ports of its own that default to fixed numbers
(8888, 9333, 23646, …) and to every interface. Two stacks on one machine (a
developer's and the tests') must never collide, so every port is set from the one
the stack chose for S3: the next eight, and the admin's gRPC port, which the
admin's maintenance worker always dials at the admin's HTTP port + 10000. The
Iceberg, Lance and WebDAV servers are off. The access keys reach `weed` through its
environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never its arguments.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from clearlake.config import LOOPBACK
from clearlake.errors import StackError

BUCKET = "clearlake"
# Flags of the internal ports, in the order they follow the S3 port.
_FOLLOWING = ("s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
              "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port")
ADMIN_GRPC_OFFSET = 10000  # where weed's worker looks for the admin's gRPC server
MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL


def internal_ports(s3_port: int) -> dict[str, int]:
    """Every port `weed mini` opens besides `s3_port`, by flag name."""
    ports = {flag: s3_port + 1 + i for i, flag in enumerate(_FOLLOWING)}
    ports["admin.port.grpc"] = ports["admin.port"] + ADMIN_GRPC_OFFSET
    return ports


def all_ports(s3_port: int) -> list[int]:
    """`s3_port` and every internal port it implies."""
    return [s3_port, *internal_ports(s3_port).values()]


# Below the kernel's ephemeral range (32768 and up by default), so that no outgoing
# connection takes one of the ports between choosing them and a restart.
_CHOSEN_RANGE = (15000, 32768 - ADMIN_GRPC_OFFSET - len(_FOLLOWING) - 1)


def free_s3_port(is_free: Callable[[int], bool], attempts: int = 200) -> int:
    """An S3 port whose internal ports are all free too (for tests and benchmarks)."""
    for _ in range(attempts):
        candidate = random.randrange(*_CHOSEN_RANGE)
        if all(is_free(port) for port in all_ports(candidate)):
            return candidate
    raise RuntimeError("found no block of free loopback ports for the S3 server")


def socket_dir(run_dir: Path) -> Path:
    """Where `weed`'s Unix sockets go: `run_dir`, unless its paths would be too long to bind
    (about 107 bytes), then a private folder under /tmp named after it (0700)."""
    if len(os.fsencode(run_dir / "filer-65535.sock")) <= MAX_SOCKET_PATH:
        return run_dir
    digest = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"clearlake-weed-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    if short.is_symlink() or short.stat().st_uid != os.geteuid():
        raise StackError(f"{short} exists and is not this user's own folder: remove it")
    return short


def command(weed: Path, data_dir: Path, run_dir: Path, s3_port: int) -> list[str]:
    """The argv of a `weed mini` serving S3 on `s3_port` with its data in `data_dir`."""
    flags = {
        "dir": str(data_dir),
        "ip": LOOPBACK,
        "ip.bind": LOOPBACK,
        "bucket": BUCKET,
        "s3.port": str(s3_port),
        **{flag: str(port) for flag, port in internal_ports(s3_port).items()},
        "s3.port.iceberg": "0",
        "s3.port.lance": "0",
        "webdav": "false",
        "admin.ui": "false",
        "master.telemetry": "false",
        # As on AWS: writing to a bucket that does not exist is an error, not a new bucket.
        "s3.autoCreateBucket": "false",
        # Their defaults are shared files in /tmp named by port.
        "filer.localSocket": str(socket_dir(run_dir) / f"filer-{s3_port}.sock"),
        "s3.localSocket": str(socket_dir(run_dir) / f"s3-{s3_port}.sock"),
    }
    return [str(weed), "mini", *(f"-{flag}={value}" for flag, value in flags.items())]


def environment(access_key_id: str, secret_access_key: str) -> dict[str, str]:
    """The environment that gives `weed` its one identity (an admin of every bucket)."""
    return {"AWS_ACCESS_KEY_ID": access_key_id, "AWS_SECRET_ACCESS_KEY": secret_access_key}


def endpoint(s3_port: int) -> str:
    """The S3 endpoint URL."""
    return f"http://{LOOPBACK}:{s3_port}"


def bucket_ready(s3_endpoint: str, access_key_id: str, secret_access_key: str) -> bool:
    """True when the S3 server answers a signed HEAD of the stack's bucket.

    `weed mini` answers `/healthz` before the bucket it was told to create exists
    (after a fresh start, measured here: `/healthz` at 1.15 s, the bucket at 1.86 s);
    a request in between is refused with NoSuchBucket. (An anonymous HEAD cannot tell:
    it is refused with 403 whether the bucket exists or not.)
    """
    import botocore.config
    import botocore.exceptions
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
        config=botocore.config.Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1},
                                      connect_timeout=2, read_timeout=5))
    try:
        client.head_bucket(Bucket=BUCKET)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return False
    finally:
        client.close()
    return True
