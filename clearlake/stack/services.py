"""Start, stop and watch the stack's processes: lakeFS, Prefect, Dask, the bridge, workers.

Each service runs in its own session (process group) with its output in
`<home>/logs/<name>.log`; its pid and start time are recorded in
`<home>/run/<name>.json`, so `down` stops exactly the processes `up` started (a
recycled pid is recognised by its different start time) and never anything else.
Data stays in the state directory across `down`/`up`.

A stack has a profile, chosen when its state directory is made and recorded in
`stack.json`: the blockstore (`s3`: lakeFS over the stack's own S3 server, the
default; `local`: lakeFS's local blockstore) and the database (`sqlite`: lakeFS's
local KV and Prefect on SQLite, the default; `postgres`: both on the stack's
PostgreSQL). Repositories live where the profile put them, so a state directory
keeps its profile; one made before profiles existed used the local blockstore.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from clearlake.config import (
    DASK_WORKER_MALLOC_ENV,
    DEFAULT_PORTS,
    LOOPBACK,
    PROJECT_DIR,
    StackSecrets,
    dask_quiet_environment,
    recorded_ports,
    state_dir,
    write_private,
)
from clearlake.errors import StackError
from clearlake.flows import FLOW_RUN_IMPORTS
from clearlake.settings import settings
from clearlake.stack import forkserver, install, seaweedfs

if TYPE_CHECKING:
    from clearlake.stack.postgres import Postgres

Report = Callable[[str], None]
# Prefect's server needs about 10 s on an idle 2-core machine, minutes on a busy one
# (its database migrations compete for the cores): wait generously, fail only when stuck.
HEALTH_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 20.0
PORT_RELEASE_S = 15.0  # how long a service's start waits for its ports (see busy_ports)
RANGE_ENTRIES = 1_000  # lakeFS's average entries per metarange range (its default: 50,000)
ACTIONS_WEBHOOK_SECRET_ENV = "LAKEFSACTION_CLEARLAKE_WEBHOOK_SECRET"
WORK_POOL = "clearlake"
POSTGRES_DATABASES = ("lakefs", "prefect")
# Prefect's defaults poll for scheduled runs every 10 s and make a run wait up to
# 30 s for a free concurrency slot; a commit should start its run within seconds.
WORKER_QUERY_SECONDS = "1"
SLOT_WAIT_SECONDS = "1"
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
# The worker and its runs ask Prefect again this many times (backoff 2, 4, … 128 s: about
# four minutes) before giving up on a call. Prefect's 5 (about a minute) was too few: on
# SQLite under a burst of runs the server answered 503 ("database is locked") longer,
# and the worker reported runs it could not submit as Crashed.
CLIENT_RETRIES = "7"


@dataclass(frozen=True)
class Service:
    """One process of the stack and how to tell that it is healthy.

    Attributes:
        name: the service's name (its log and pid files are named after it).
        port: the port it listens on, if any (checked to be free before starting).
        command: how to start it.
        health_url: answers 2xx when healthy.
        health_socket: a Unix socket that accepts connections when healthy.
        health_check: answers True when healthy. With none of the three, a service
            is healthy while it runs.
        url: what to show a person.
        env: extra environment (may hold secrets: never printed).
        more_ports: other ports it opens (checked to be free before starting).
    """

    name: str
    port: int | None
    command: list[str]
    health_url: str | None
    url: str
    env: dict[str, str] = field(default_factory=dict, repr=False)
    health_socket: Path | None = None
    health_check: Callable[[], bool] | None = None
    more_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ServiceStatus:
    """What `status` reports for one service."""

    name: str
    url: str
    pid: int | None
    running: bool
    healthy: bool


def port_variable(name: str) -> str:
    """The environment variable that sets service `name`'s port."""
    return f"CLEARLAKE_{name.upper().replace('-', '_')}_PORT"


# Below the kernel's usual ephemeral range (32768 and up): a port the kernel hands out
# (bind to port 0) can be taken by any outgoing connection while its service is down
# for a restart, which then cannot start again ("in use by another program").
CHOSEN_PORTS = range(10000, 15000)


def free_loopback_ports() -> dict[str, int]:
    """One port per service that was free on loopback a moment ago (tests, benchmarks),
    none in the kernel's ephemeral range."""
    ports = {"s3": seaweedfs.free_s3_port(port_is_free)}
    taken = set(seaweedfs.all_ports(ports["s3"]))
    candidates = random.sample(CHOSEN_PORTS, len(CHOSEN_PORTS))
    for name in DEFAULT_PORTS:
        if name in ports:  # the S3 port, chosen with the block of ports it implies
            continue
        ports[name] = next(p for p in candidates if p not in taken and port_is_free(p))
        taken.add(ports[name])
    return ports


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` on the loopback address."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def busy_ports(ports: Sequence[int], timeout_s: float) -> list[int]:
    """Those of `ports` still taken after waiting up to `timeout_s` for them to be freed.

    A service restarted right after it was killed finds its port taken for a moment
    while the kernel tears down the dead process's sockets (seen once in the
    reliability suite's scheduler restart, under load); a port another program holds
    stays taken.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        busy = [port for port in ports if not port_is_free(port)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def _process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces): state is field 3,
    # start time field 22. A zombie has exited; it only waits for its parent to reap it.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def _is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


# In start order; `down` stops them in reverse.
SERVICE_NAMES = ("s3", "postgres", "lakefs", "prefect", "dask-scheduler", "bridge",
                 "flow-forkserver", "dask-workers", "prefect-worker")
BLOCKSTORES = ("s3", "local")
DATABASES = ("sqlite", "postgres")


@dataclass(frozen=True)
class Profile:
    """Where a stack keeps its data.

    Attributes:
        blockstore: 's3' (the stack's S3 server) or 'local' (lakeFS's local blockstore).
        database: 'sqlite' (lakeFS local KV, Prefect on SQLite) or 'postgres'.
    """

    blockstore: str = "s3"
    database: str = "sqlite"


def recorded_profile(home: Path) -> Profile | None:
    """The profile the state directory `home` was made with; None for a new one."""
    path = home / "stack.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    if "blockstore" in recorded:
        return Profile(recorded["blockstore"], recorded.get("database", "sqlite"))
    if (home / "lakefs" / "metadata").exists():
        return Profile("local", "sqlite")  # made before clearlake ran lakeFS over S3
    return None


class Stack:
    """The local stack rooted at a state directory.

    Args:
        home: the state directory; `$CLEARLAKE_HOME` or `./.clearlake` by default.
        ports: ports per service name; unset ones come from environment variables
            (`CLEARLAKE_LAKEFS_PORT`, `CLEARLAKE_PREFECT_PORT`), then from the last
            `up`, then the defaults (lakeFS 8000, Prefect 4200).
        blockstore: 's3' or 'local' for a new state directory (default 's3').
        database: 'sqlite' or 'postgres' for a new state directory (default 'sqlite').

    Raises:
        StackError: the state directory was made with another blockstore or database.
    """

    def __init__(
        self,
        home: Path | None = None,
        ports: dict[str, int] | None = None,
        *,
        blockstore: str | None = None,
        database: str | None = None,
    ) -> None:
        self.home = (home or state_dir()).resolve()
        chosen = recorded_ports(self.home)
        chosen.update({n: p for n, p in settings().ports.items() if n in DEFAULT_PORTS})
        chosen.update(ports or {})
        self.ports = chosen
        self.profile = self._choose_profile(blockstore, database)

    def _choose_profile(self, blockstore: str | None, database: str | None) -> Profile:
        if blockstore not in (None, *BLOCKSTORES):
            raise StackError(f"unknown blockstore {blockstore!r}: choose one of {BLOCKSTORES}")
        if database not in (None, *DATABASES):
            raise StackError(f"unknown database {database!r}: choose one of {DATABASES}")
        recorded = recorded_profile(self.home)
        if recorded is None:
            return Profile(blockstore or Profile.blockstore, database or Profile.database)
        for name, wanted, kept in (("blockstore", blockstore, recorded.blockstore),
                                   ("database", database, recorded.database)):
            if wanted is not None and wanted != kept:
                raise StackError(
                    f"the state directory {self.home} was made with {name} {kept!r}, and its "
                    f"repositories live there: it cannot switch to {wanted!r}. Start a stack "
                    f"with {name} {wanted!r} in another state directory (CLEARLAKE_HOME).")
        return recorded

    # -- layout ------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        """The log file of service `name`."""
        return self.home / "logs" / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.home / "run" / f"{name}.json"

    @property
    def lakefs_url(self) -> str:
        """Base URL of lakeFS (API under /api/v1, web UI at /)."""
        return f"http://{LOOPBACK}:{self.ports['lakefs']}"

    @property
    def prefect_api_url(self) -> str:
        """The Prefect server's API URL (its UI is this without /api)."""
        return f"http://{LOOPBACK}:{self.ports['prefect']}/api"

    @property
    def bridge_url(self) -> str:
        """Base URL of the webhook bridge."""
        return f"http://{LOOPBACK}:{self.ports['bridge']}"

    @property
    def s3_endpoint(self) -> str:
        """The stack's S3 server (with the `s3` blockstore)."""
        return seaweedfs.endpoint(self.ports["s3"])

    @property
    def dask_address(self) -> str:
        """The Dask scheduler's address."""
        return f"tcp://{LOOPBACK}:{self.ports['dask']}"

    @property
    def dask_dashboard_url(self) -> str:
        """The Dask dashboard."""
        return f"http://{LOOPBACK}:{self.ports['dask-dashboard']}/status"

    def client_env(self) -> dict[str, str]:
        """Environment for clearlake's own processes: where the stack is (no secrets)."""
        return {
            "CLEARLAKE_HOME": str(self.home),
            "PREFECT_API_URL": self.prefect_api_url,
            "LAKEFS_ENDPOINT": self.lakefs_url,
            "CLEARLAKE_DASK_ADDRESS": self.dask_address,
            "PREFECT_HOME": str(self.home / "prefect"),
            "CLEARLAKE_PROJECT_DIR": str(PROJECT_DIR),
        }

    # -- services ----------------------------------------------------------------------
    def services(self) -> list[list[Service]]:
        """The stack's services in start phases: each phase is healthy before the next.

        The first phase holds the stores lakeFS and Prefect keep their data in, if the
        profile has any; the deployments are applied before the last phase."""
        secrets = StackSecrets.load(self.home)
        stores = []
        if self.profile.blockstore == "s3":
            stores.append(self._s3(secrets))
        if self.profile.database == "postgres":
            stores.append(self._postgres(secrets))
        servers = [self._lakefs(secrets), self._prefect(secrets), self._dask_scheduler(),
                   self._bridge(), self._flow_forkserver()]
        workers = [self._dask_workers(), self._prefect_worker()]
        return [phase for phase in (stores, servers, workers) if phase]

    def _s3(self, secrets: StackSecrets) -> Service:
        root = self.home / "s3"
        (root / "data").mkdir(parents=True, exist_ok=True)
        (self.home / "run").mkdir(parents=True, exist_ok=True)
        return Service(
            name="s3",
            port=self.ports["s3"],
            command=seaweedfs.command(install.weed_binary(), root / "data", self.home / "run",
                                      self.ports["s3"]),
            health_url=f"{self.s3_endpoint}/healthz",
            # Up, and its bucket there (which /healthz does not wait for).
            health_check=lambda: (_is_healthy(f"{self.s3_endpoint}/healthz")
                                  and seaweedfs.bucket_ready(
                                      self.s3_endpoint, secrets.s3_access_key_id,
                                      secrets.s3_secret_access_key.get_secret_value())),
            url=f"{self.s3_endpoint}  (SeaweedFS, bucket {seaweedfs.BUCKET})",
            env=seaweedfs.environment(secrets.s3_access_key_id,
                                      secrets.s3_secret_access_key.get_secret_value()),
            more_ports=tuple(seaweedfs.internal_ports(self.ports["s3"]).values()),
        )

    def _postgres_server(self, secrets: StackSecrets) -> Postgres:
        from clearlake.stack.postgres import Postgres

        return Postgres(self.home, self.ports["postgres"], secrets.postgres_password)

    def _postgres(self, secrets: StackSecrets) -> Service:
        server = self._postgres_server(secrets)
        return Service(
            name="postgres",
            port=self.ports["postgres"],
            command=server.command(),
            health_url=None,
            health_check=server.is_ready,
            url=f"postgresql://{LOOPBACK}:{self.ports['postgres']}  (databases lakefs, prefect)",
            env=server.env(),
        )

    def _bridge(self) -> Service:
        return Service(
            name="bridge",
            port=self.ports["bridge"],
            command=[sys.executable, "-m", "uvicorn", "clearlake.bridge:create_app", "--factory",
                     "--host", LOOPBACK, "--port", str(self.ports["bridge"]),
                     "--no-server-header"],
            health_url=f"{self.bridge_url}/healthz",
            url=self.bridge_url,
            env=self.client_env(),
        )

    def _dask_scheduler(self) -> Service:
        return Service(
            name="dask-scheduler",
            port=self.ports["dask"],
            command=[sys.executable, "-m", "dask", "scheduler", "--host", LOOPBACK,
                     "--port", str(self.ports["dask"]),
                     "--dashboard-address", f"{LOOPBACK}:{self.ports['dask-dashboard']}"],
            health_url=f"http://{LOOPBACK}:{self.ports['dask-dashboard']}/health",
            url=self.dask_dashboard_url,
            env=dask_quiet_environment(),
        )

    def _dask_workers(self) -> Service:
        # One single-threaded worker process per core: measuring images is CPU-bound.
        cores = len(os.sched_getaffinity(0))
        return Service(
            name="dask-workers",
            port=None,
            # Supervised: a worker that loses its scheduler exits (see stack.supervise).
            command=[sys.executable, "-m", "clearlake.stack.supervise",
                     sys.executable, "-m", "dask", "worker", self.dask_address,
                     "--nworkers", str(cores), "--nthreads", "1", "--host", LOOPBACK,
                     "--no-dashboard", "--local-directory", str(self.home / "dask"),
                     # Import the flow's code at start-up, not on the first task of a run.
                     "--preload", "clearlake.flows.classify"],
            health_url=None,
            url=f"{cores} worker processes",
            env={**self.client_env(), **dask_quiet_environment(),
                 "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 # Dask's nanny gives each worker the environment in this setting;
                 # Dask merges this one into its default.
                 "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": repr(DASK_WORKER_MALLOC_ENV)},
        )

    @property
    def forkserver_socket(self) -> Path:
        """Where the flow-run forkserver listens."""
        return self.home / "run" / "flow-forkserver.sock"

    def _flow_forkserver(self) -> Service:
        # Flow runs fork from here instead of importing Prefect and the flows anew
        # (seconds per run); the work pool's command launches them (see `deploy`).
        preload = [arg for module in FLOW_RUN_IMPORTS for arg in ("--preload", module)]
        return Service(
            name="flow-forkserver",
            port=None,
            command=[sys.executable, "-m", "clearlake.stack.forkserver", "serve",
                     "--socket", str(self.forkserver_socket), "--watch", str(PROJECT_DIR),
                     *preload],
            health_url=None,
            health_socket=self.forkserver_socket,
            url=str(self.forkserver_socket),
            # No thread may run in a process that forks: no BLAS thread pool, and no
            # background thread in pyarrow's jemalloc (it purges inline instead).
            env={**self.client_env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "JE_ARROW_MALLOC_CONF": "background_thread:false"},
        )

    def _work_pool_template(self) -> Path:
        """The process work pool's job template: runs start through the forkserver."""
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        template["variables"]["properties"]["command"]["default"] = shlex.join(
            forkserver.launch_command(sys.executable, self.forkserver_socket))
        path = self.home / "run" / "work-pool-template.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(template, indent=1))
        return path

    def _prefect_worker(self) -> Service:
        return Service(
            name="prefect-worker",
            port=None,
            # Supervised: a worker that cannot reach the Prefect server for about a minute
            # (its restart under load) exits, and no run would start after (stack.supervise).
            command=[sys.executable, "-m", "clearlake.stack.supervise",
                     sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL,
                     "--type", "process", "--name", "clearlake-local"],
            health_url=None,
            url=f"work pool {WORK_POOL!r}",
            env={**self.client_env(), "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS,
                 "PREFECT_RUNNER_POLL_FREQUENCY": WORKER_QUERY_SECONDS,
                 "PREFECT_CLIENT_MAX_RETRIES": CLIENT_RETRIES},
        )

    def deploy(self, report: Report = print) -> None:
        """Create the work pool and (re)deploy `prefect.yaml`'s deployments. Idempotent."""
        env = {**os.environ, **self.client_env()}
        prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
        pool = subprocess.run([*prefect, "work-pool", "create", WORK_POOL, "--type", "process",
                               "--base-job-template", str(self._work_pool_template()),
                               "--overwrite"], env=env, capture_output=True, text=True)
        if pool.returncode != 0:
            raise StackError(f"could not create work pool {WORK_POOL}: {pool.stdout}{pool.stderr}")
        if not (PROJECT_DIR / "prefect.yaml").exists():
            report(f"no prefect.yaml in {PROJECT_DIR}: deployments not created")
            return
        done = subprocess.run([*prefect, "deploy", "--all"], cwd=PROJECT_DIR, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"prefect deploy failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        zombies = subprocess.run([sys.executable, "-m", "clearlake.stack.automations"],
                                 env=env, capture_output=True, text=True)
        if zombies.returncode != 0:
            raise StackError("could not create the automations that crash dead flow runs:\n"
                             f"{zombies.stdout[-3000:]}{zombies.stderr[-3000:]}")
        report("deployments: classify-commit (on lakeFS commits), reconcile (scheduled), "
               "train-classifier (by hand); automations: flow runs that stop beating, or "
               "never beat, end Crashed")

    def _lakefs(self, secrets: StackSecrets) -> Service:
        root = self.home / "lakefs"
        # Secrets go through the environment, never into the config file.
        env = {
            "LAKEFS_AUTH_ENCRYPT_SECRET_KEY": secrets.lakefs_encrypt_key.get_secret_value(),
            "LAKEFS_INSTALLATION_ACCESS_KEY_ID": secrets.lakefs_access_key_id,
            "LAKEFS_INSTALLATION_SECRET_ACCESS_KEY": (
                secrets.lakefs_secret_access_key.get_secret_value()
            ),
            # Read by the action files as {{ ENV.LAKEFSACTION_CLEARLAKE_WEBHOOK_SECRET }}.
            ACTIONS_WEBHOOK_SECRET_ENV: secrets.webhook_secret.get_secret_value(),
        }
        if self.profile.blockstore == "s3":
            blockstore = {
                "type": "s3",
                # What clearlake (and lakeFS's UI) names new repositories' namespaces after.
                "default_namespace_prefix": f"s3://{seaweedfs.BUCKET}/",
                "s3": {"endpoint": self.s3_endpoint, "force_path_style": True,
                       "discover_bucket_region": False, "region": "us-east-1"},
            }
            env["LAKEFS_BLOCKSTORE_S3_CREDENTIALS_ACCESS_KEY_ID"] = secrets.s3_access_key_id
            env["LAKEFS_BLOCKSTORE_S3_CREDENTIALS_SECRET_ACCESS_KEY"] = (
                secrets.s3_secret_access_key.get_secret_value())
        else:
            blockstore = {"type": "local", "default_namespace_prefix": "local://",
                          "local": {"path": str(root / "data")}}
        if self.profile.database == "postgres":
            database: dict = {"type": "postgres"}
            env["LAKEFS_DATABASE_POSTGRES_CONNECTION_STRING"] = (
                self._postgres_server(secrets).lakefs_connection_string())
        else:
            database = {"type": "local", "local": {"path": str(root / "metadata")}}
        config = {
            "listen_address": f"{LOOPBACK}:{self.ports['lakefs']}",
            "database": database,
            "blockstore": blockstore,
            "committed": {"local_cache": {"dir": str(root / "cache")},
                          # Small ranges (lakeFS's default: ~50,000 entries): a commit and a
                          # diff rewrite and read whole ranges, so a 10-image change to a
                          # large repository costs what it changes, not the repository.
                          "permanent": {"range_raggedness_entries": RANGE_ENTRIES}},
            "actions": {"enabled": True},
            "installation": {"user_name": "admin"},
            # No telemetry, no version checks: this machine talks only to loopback.
            "stats": {"enabled": False},
            # Without it, the web UI opens on a "User Configuration" (e-mail) form before
            # any data: a stack that sends no mail has no use for it.
            "email_subscription": {"enabled": False},
            "security": {"check_latest_version": False},
        }
        config_path = root / "config.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return Service(
            name="lakefs",
            port=self.ports["lakefs"],
            command=[str(install.lakefs_binary()), "run", "--config", str(config_path)],
            health_url=f"{self.lakefs_url}/api/v1/healthcheck",
            url=self.lakefs_url,
            env=env,
        )

    def _prefect(self, secrets: StackSecrets) -> Service:
        root = self.home / "prefect"
        root.mkdir(parents=True, exist_ok=True)
        database = (self._postgres_server(secrets).prefect_connection_url()
                    if self.profile.database == "postgres"
                    else f"sqlite+aiosqlite:///{root / 'prefect.db'}")
        env = {
            "PREFECT_HOME": str(root),
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_UI_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": SLOT_WAIT_SECONDS,
            # Concurrency leases on disk (under PREFECT_HOME), not in the server's memory:
            # a restart that forgot them would keep the slot of a run that died meanwhile
            # taken forever, and every later run of its branch would wait for it.
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        }
        port = str(self.ports["prefect"])
        return Service(
            name="prefect",
            port=self.ports["prefect"],
            command=[
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                LOOPBACK,
                "--port",
                port,
            ],
            health_url=f"{self.prefect_api_url}/health",
            url=self.prefect_api_url.removesuffix("/api"),
            env=env,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def _running_pid(self, name: str) -> int | None:
        """The pid of `name` if the process this stack started is still alive."""
        path = self._pid_path(name)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if _process_start_time(record["pid"]) != record["start_time"]:
            return None  # exited, and the pid may since belong to someone else
        return record["pid"]

    def up(self, report: Report = print, *, deploy: bool = True) -> None:
        """Start every service not already running, phase by phase, until all are healthy.

        Running `up` again is harmless: running services are left alone, and the
        deployments are re-applied (idempotent).

        Raises:
            StackError: lakeFS is not built, a port is taken by another program, or a
                service did not become healthy in time (with its log's tail).
        """
        if not install.is_installed():
            raise StackError("lakeFS is not built yet: run `clearlake stack install` first")
        if self.profile.blockstore == "s3":
            install.verify_seaweedfs(report)
        self.home.mkdir(parents=True, exist_ok=True)
        secrets = StackSecrets.load_or_create(self.home)  # the one place secrets are made
        if self.profile.database == "postgres":
            from clearlake.stack.postgres import PREFECT_EXTENSIONS

            postgres = self._postgres_server(secrets)
            postgres.initialize()
            postgres.check_extensions(PREFECT_EXTENSIONS)
        write_private(self.home / "stack.json", json.dumps(
            {"ports": self.ports, "blockstore": self.profile.blockstore,
             "database": self.profile.database}, indent=2))
        report(f"blockstore: {self.profile.blockstore}"
               + (f" (SeaweedFS at {self.s3_endpoint}, bucket {seaweedfs.BUCKET})"
                  if self.profile.blockstore == "s3" else " (lakeFS's local blockstore)")
               + f"; database: {self.profile.database}")
        phases = self.services()
        started: list[str] = []
        try:
            for number, phase in enumerate(phases):
                if number == len(phases) - 1 and deploy:
                    self.deploy(report)
                for service in phase:
                    if self._running_pid(service.name) is not None:
                        report(f"{service.name}: already running")
                    else:
                        self._start(service)
                        started.append(service.name)
                        report(f"{service.name}: starting")
                for service in phase:
                    self._wait_healthy(service)
                    report(f"{service.name}: healthy — {service.url}")
                    if service.name == "postgres":
                        self._postgres_server(secrets).ensure_databases(POSTGRES_DATABASES)
                    if service.name == "lakefs" and self.profile.database == "postgres":
                        self._set_up_lakefs_admin(secrets)
        except BaseException:
            # A stack that could not come up leaves nothing of this attempt running.
            for name in reversed(started):
                if (pid := self._running_pid(name)) is not None:
                    self._stop(pid)
            raise

    def _set_up_lakefs_admin(self, secrets: StackSecrets) -> None:
        """Create lakeFS's admin with the stack's keys, once.

        lakeFS creates the `installation` user itself only on its local KV store
        (cmd/lakefs/cmd/run.go); on PostgreSQL the stack calls its setup API right after
        lakeFS is healthy. lakeFS answers 409 once it is set up.
        """
        body = json.dumps({"username": "admin", "key": {
            "access_key_id": secrets.lakefs_access_key_id,
            "secret_access_key": secrets.lakefs_secret_access_key.get_secret_value()}})
        request = urllib.request.Request(
            f"{self.lakefs_url}/api/v1/setup_lakefs", data=body.encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise StackError(f"lakeFS refused its set-up: {error.code} "
                                 f"{error.read().decode(errors='replace')[:300]}") from error

    def _start(self, service: Service) -> None:
        ports = ([service.port] if service.port is not None else []) + list(service.more_ports)
        if busy := busy_ports(ports, PORT_RELEASE_S):
            raise StackError(
                f"port {busy[0]} for {service.name} is in use by another program (waited "
                f"{PORT_RELEASE_S:.0f} s); choose another with {port_variable(service.name)}"
            )
        log = self.log_path(service.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                service.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **service.env},
                cwd=self.home,
                start_new_session=True,  # its own process group: `down` stops its children too
            )
        record = {
            "pid": process.pid,
            "start_time": _process_start_time(process.pid),
            "port": service.port,
        }
        write_private(self._pid_path(service.name), json.dumps(record))

    def _is_up(self, service: Service) -> bool:
        if self._running_pid(service.name) is None:
            return False
        if service.health_socket is not None:
            return _accepts_connections(service.health_socket)
        if service.health_check is not None:
            return service.health_check()
        return service.health_url is None or _is_healthy(service.health_url)

    def _wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._is_up(service):
                return
            if self._running_pid(service.name) is None:
                break
            time.sleep(0.25)
        tail = "\n".join(self.log_path(service.name).read_text(errors="replace").splitlines()[-20:])
        state = "exited" if self._running_pid(service.name) is None else "is not healthy"
        raise StackError(f"{service.name} {state} ({service.health_url}); last log lines:\n{tail}")

    def down(self, report: Report = print) -> None:
        """Stop the processes this stack started (by recorded pid); keep all data."""
        for name in reversed(SERVICE_NAMES):
            pid = self._running_pid(name)
            if pid is None:
                report(f"{name}: not running")
            else:
                self._stop(pid)
                report(f"{name}: stopped")
            self._pid_path(name).unlink(missing_ok=True)

    def _stop(self, pid: int) -> None:
        start_time = _process_start_time(pid)
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if _process_start_time(pid) != start_time:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(pid, signal.SIGKILL)

    # -- one service at a time (fault injection: tests, bench.soak) ----------------------
    def _service(self, name: str) -> Service:
        for phase in self.services():
            for service in phase:
                if service.name == name:
                    return service
        raise StackError(f"this stack has no service {name!r}")

    def processes(self, name: str) -> list[int]:
        """The pids of service `name`'s process group: its process and every child that
        stayed in its group (Dask's worker processes, a server's workers); [] if stopped."""
        pid = self._running_pid(name)
        if pid is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry.name)) == pid:
                        found.append(int(entry.name))
        return sorted(found)

    def stop_service(self, name: str, *, kill: bool = False) -> None:
        """Stop service `name`: as `down` does, or with `kill` by SIGKILL to its whole
        process group at once, as a crash or an OOM kill would (nothing gets to clean up).
        Nothing happens if it is not running."""
        pid = self._running_pid(name)
        if pid is None:
            return
        if not kill:
            self._stop(pid)
            return
        start_time = _process_start_time(pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _process_start_time(pid) == start_time:
            time.sleep(0.05)

    def start_service(self, name: str) -> None:
        """Start service `name` if it is not running, and wait until it is healthy.

        Raises:
            StackError: no such service, its port is taken, or it did not become healthy.
        """
        service = self._service(name)
        if self._running_pid(name) is None:
            self._start(service)
        self._wait_healthy(service)

    def restart_service(self, name: str, *, kill: bool = False) -> None:
        """`stop_service` then `start_service`: the same command, ports and data."""
        self.stop_service(name, kill=kill)
        self.start_service(name)

    def status(self) -> list[ServiceStatus]:
        """Whether each service runs and answers its health check."""
        if not (self.home / "secrets.json").exists():
            return [ServiceStatus(name, "", None, False, False) for name in SERVICE_NAMES]
        return [
            ServiceStatus(s.name, s.url, self._running_pid(s.name),
                          self._running_pid(s.name) is not None, self._is_up(s))
            for phase in self.services() for s in phase
        ]
