"""Where the local stack lives and how clients find it.

The stack keeps everything under one state directory: `$CLEARLAKE_HOME`, or
`.clearlake/` in the working directory. `clearlake stack up` records the ports it
used in `stack.json` and generates its secrets once into `secrets.json` (mode
0600), so the CLI, the blocks and the flows find lakeFS and Prefect without anyone
copying keys around. Environment variables (read through `clearlake.settings`)
override what the stack recorded.

lakeFS credentials resolve in this order: an explicit `LakeFSCredentials` block
(`clearlake.blocks.LakeFSCredentials.get_lakefs()`), then `LAKEFS_ACCESS_KEY_ID` and
`LAKEFS_SECRET_ACCESS_KEY`, then the local stack's (when its state directory has
them), then lakectl's `~/.lakectl.yaml`. The local stack comes before lakectl's file so
that `make demo` on a laptop configured for a team's lakeFS writes to the demo's own.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path

from pydantic import SecretStr

from clearlake.errors import ConfigurationError
from clearlake.quality.memory import MALLOC_ENV
from clearlake.settings import settings

DEFAULT_PORTS: dict[str, int] = {
    "lakefs": 8000, "prefect": 4200, "bridge": 8765, "dask": 8786, "dask-dashboard": 8787,
    # The S3 server's endpoint; its internal ports follow it (clearlake/stack/seaweedfs.py).
    "s3": 8333, "postgres": 5433,
}
# The source checkout (where prefect.yaml lives) when clearlake is installed editable.
PROJECT_DIR = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

# Dask's worker processes start with glibc's malloc set up for image work (instead of
# the nanny's MALLOC_TRIM_THRESHOLD_=65536): see clearlake.quality.memory.
DASK_WORKER_MALLOC_ENV: dict[str, str] = MALLOC_ENV

# Dask's housekeeping at its defaults keeps an idle stack's two workers at 10.6 % of a
# core (each event loop's 20 ms tick, the 10 ms statistical profiler, the 100 ms memory
# monitor), CPU that measuring takes back on a small machine: 1.1 % with these
# (`python -m bench.idle_cpu`). The tick still reports a loop blocked for over 3 s, and
# the memory monitor still enforces a worker's limits, twice a second; the dashboard's
# profile page stays empty.
DASK_QUIET_CONFIG: dict[str, object] = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "500ms",
}


def _dask_variable(key: str) -> str:
    """The environment variable Dask reads `key` from (``a.b-c`` → ``DASK_A__B_C``)."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def dask_quiet_settings() -> dict[str, object]:
    """`DASK_QUIET_CONFIG` but for what the environment sets (a user's own settings win)."""
    return {key: value for key, value in DASK_QUIET_CONFIG.items()
            if _dask_variable(key) not in os.environ}


def dask_quiet_environment() -> dict[str, str]:
    """`dask_quiet_settings` as the environment variables Dask reads at start-up."""
    return dask_environment(dask_quiet_settings())


def dask_environment(settings: dict[str, object]) -> dict[str, str]:
    """Dask settings ``{key: value}`` as the environment variables Dask reads at start-up."""
    return {_dask_variable(key): str(value) for key, value in settings.items()}


def state_dir() -> Path:
    """The stack's state directory (not created here)."""
    return settings().home


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, never briefly readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class StackSecrets:
    """Secrets generated once per stack. Never logged, never committed.

    Attributes:
        lakefs_access_key_id: the lakeFS admin's access key id.
        lakefs_secret_access_key: the lakeFS admin's secret key.
        lakefs_encrypt_key: lakeFS's key for encrypting its auth data at rest.
        webhook_secret: shared secret lakeFS sends to the webhook bridge.
        signing_key: HMAC key that marks clearlake's own results commits.
        s3_access_key_id: the stack's S3 server's access key id (lakeFS's blockstore).
        s3_secret_access_key: its secret key.
        postgres_password: the password of the stack's PostgreSQL superuser.
    """

    lakefs_access_key_id: str
    lakefs_secret_access_key: SecretStr
    lakefs_encrypt_key: SecretStr
    webhook_secret: SecretStr
    signing_key: SecretStr
    s3_access_key_id: str
    s3_secret_access_key: SecretStr
    postgres_password: SecretStr

    @staticmethod
    def _generate() -> dict[str, str]:
        return {
            # Access key ids look like AWS ones: 'AKIA' + 16 upper-case characters.
            "lakefs_access_key_id": "AKIAJ" + secrets.token_hex(8).upper()[:15],
            "lakefs_secret_access_key": secrets.token_urlsafe(30),
            "lakefs_encrypt_key": secrets.token_urlsafe(32),
            "webhook_secret": secrets.token_urlsafe(32),
            "signing_key": secrets.token_urlsafe(32),
            "s3_access_key_id": "AKIAS" + secrets.token_hex(8).upper()[:15],
            "s3_secret_access_key": secrets.token_urlsafe(30),
            "postgres_password": secrets.token_urlsafe(24),
        }

    @classmethod
    def load_or_create(cls, home: Path) -> StackSecrets:
        """Read `secrets.json`, generating it (mode 0600) on first use.

        A file from an older clearlake gains the secrets it lacks; those it has are
        kept, since lakeFS's data is encrypted with them."""
        path = home / "secrets.json"
        raw = json.loads(path.read_text()) if path.exists() else {}
        missing = {k: v for k, v in cls._generate().items() if k not in raw}
        if missing:
            raw.update(missing)
            write_private(path, json.dumps(raw, indent=2))
        return cls.load(home)

    @classmethod
    def load(cls, home: Path) -> StackSecrets:
        """Read the secrets `clearlake stack up` generated in `home`; never create any.

        Only `stack up` creates secrets: a key made up by any other process would sign
        markers and authenticate webhooks that no other process accepts.

        Raises:
            ConfigurationError: `secrets.json` is missing, unreadable, or from an older
                clearlake that lacks some secrets (the error says where it looked).
        """
        path = home / "secrets.json"
        hint = ("start the stack with `clearlake stack up`, or set CLEARLAKE_HOME to the "
                "state directory of the stack to use")
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(f"no clearlake secrets at {path}: {hint}") from None
        except (OSError, ValueError) as error:  # no values in the message: it may hold secrets
            raise ConfigurationError(
                f"cannot read clearlake secrets at {path} ({type(error).__name__}): {hint}"
            ) from None
        names = [f.name for f in fields(cls)]
        raw = raw if isinstance(raw, dict) else {}
        if missing := [n for n in names if not isinstance(raw.get(n), str)]:
            raise ConfigurationError(
                f"clearlake secrets at {path} lack {', '.join(missing)}: run `clearlake "
                f"stack up` once to add them"
            )
        plain = ("lakefs_access_key_id", "s3_access_key_id")
        return cls(**{n: raw[n] if n in plain else SecretStr(raw[n]) for n in names})


def recorded_ports(home: Path | None = None) -> dict[str, int]:
    """Ports the stack in `home` was last started with (defaults where none recorded)."""
    path = (home or state_dir()) / "stack.json"
    ports = dict(DEFAULT_PORTS)
    if path.exists():
        ports.update(json.loads(path.read_text()).get("ports", {}))
    return ports


@dataclass(frozen=True)
class LakeFSSettings:
    """How to reach lakeFS: endpoint and credentials.

    Attributes:
        endpoint: base URL, without /api/v1.
        access_key_id: the access key id.
        secret_access_key: the secret key.
        storage_namespace: prefix of new repositories' storage namespaces; None means
            what the lakeFS server suggests (its `default_namespace_prefix`).
    """

    endpoint: str
    access_key_id: str
    secret_access_key: SecretStr
    storage_namespace: str | None = None


def lakefs_settings(home: Path | None = None) -> LakeFSSettings:
    """lakeFS endpoint and credentials: the environment, the local stack's, or lakectl's
    (in that order; see the module docstring).

    Raises:
        ConfigurationError: none of them has credentials (the error says where it looked).
    """
    home = home or state_dir()
    env = settings()
    endpoint, key_id, secret = (env.lakefs_endpoint, env.lakefs_access_key_id,
                                env.lakefs_secret_access_key)
    if not (key_id and secret):
        try:
            stack = StackSecrets.load(home)
        except ConfigurationError as error:
            lakectl = lakectl_credentials()
            if lakectl is None:
                raise ConfigurationError(
                    f"no lakeFS credentials: LAKEFS_ACCESS_KEY_ID and LAKEFS_SECRET_ACCESS_KEY "
                    f"are unset, {LAKECTL_CONFIG} has none, and {error}") from None
            endpoint = endpoint or lakectl[0]
            key_id, secret = lakectl[1], lakectl[2]
        else:
            key_id, secret = (stack.lakefs_access_key_id,
                              stack.lakefs_secret_access_key.get_secret_value())
    if not endpoint:
        endpoint = f"http://{LOOPBACK}:{recorded_ports(home)['lakefs']}"
    return LakeFSSettings(endpoint.rstrip("/"), key_id, SecretStr(secret),
                          env.storage_namespace)


LAKECTL_CONFIG = Path("~/.lakectl.yaml")


def lakectl_credentials() -> tuple[str | None, str, str] | None:
    """(endpoint, access key id, secret key) from lakectl's `~/.lakectl.yaml`, if it has them."""
    import yaml

    try:
        config = yaml.safe_load(LAKECTL_CONFIG.expanduser().read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    credentials = config.get("credentials") or {}
    server = config.get("server") or {}
    key_id, secret = credentials.get("access_key_id"), credentials.get("secret_access_key")
    if not (isinstance(key_id, str) and isinstance(secret, str) and key_id and secret):
        return None
    endpoint = server.get("endpoint_url") if isinstance(server, dict) else None
    if isinstance(endpoint, str) and endpoint:
        endpoint = endpoint.rstrip("/").removesuffix("/api/v1")  # lakectl takes either form
    else:
        endpoint = None
    return endpoint, key_id, secret


def prefect_api_url(home: Path | None = None) -> str:
    """The Prefect API URL: `PREFECT_API_URL` if set, else the local stack's server."""
    return settings().prefect_api_url or (
        f"http://{LOOPBACK}:{recorded_ports(home)['prefect']}/api"
    )
