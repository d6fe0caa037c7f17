"""Every environment variable clearlake reads, in one typed object.

`settings()` reads the environment afresh on each call (tests and `clearlake stack up`
change it), and nothing else in clearlake reads `CLEARLAKE_*`, `LAKEFS_*` or
`PREFECT_*` variables. `VARIABLES` is the one list of them, with what each means;
the README's configuration table is checked against it by the tests.

Standard library only: the image core (decode, score) imports it in every worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_METRICS_REPOSITORY = "clearlake-metrics"


@dataclass(frozen=True)
class Variable:
    """One environment variable clearlake reads, and what it means."""

    name: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("CLEARLAKE_HOME", "the local stack's state directory (default `./.clearlake`)"),
    Variable("LAKEFS_ENDPOINT", "lakeFS's base URL (default: the local stack's)"),
    Variable("LAKEFS_ACCESS_KEY_ID", "lakeFS access key id (with the secret key below)"),
    Variable("LAKEFS_SECRET_ACCESS_KEY", "lakeFS secret access key"),
    Variable("CLEARLAKE_STORAGE_NAMESPACE",
             "prefix of new repositories' storage namespaces, e.g. `s3://bucket/lakefs/` "
             "(default: lakeFS's `default_namespace_prefix`)"),
    Variable("CLEARLAKE_METRICS_REPOSITORY",
             f"the metrics store's repository (default `{DEFAULT_METRICS_REPOSITORY}`)"),
    Variable("CLEARLAKE_BRIDGE_URL", "the bridge (review pages) as a person's browser "
             "reaches it, in links clearlake prints (default: the local stack's)"),
    Variable("PREFECT_API_URL", "the Prefect API (default: the local stack's server)"),
    Variable("PREFECT__FLOW_RUN_ID", "set by Prefect in a flow run's process; names the "
             "run's temporary branches"),
    Variable("CLEARLAKE_SIGNING_KEY", "HMAC key of results markers and records "
             "(default: the local stack's)"),
    Variable("CLEARLAKE_WEBHOOK_SECRET", "the secret lakeFS sends to the bridge "
             "(default: the local stack's)"),
    Variable("CLEARLAKE_DASK_ADDRESS", "a Dask scheduler for `classify-commit` "
             "(default: a local cluster)"),
    Variable("CLEARLAKE_SCRIPTS_REPOSITORIES", "lakeFS repositories whose metric code runs "
             "may load (comma-separated; default none: scripts are off)"),
    Variable("CLEARLAKE_MAX_PIXELS", "largest image decoded, in pixels (default 52.7 MP, "
             "the per-image memory budget)"),
    Variable("CLEARLAKE_CACHE_DIR", "`clearlake score`'s metrics cache "
             "(default `$XDG_CACHE_HOME/clearlake/metrics`)"),
    Variable("CLEARLAKE_<SERVICE>_PORT", "a service's port for `clearlake stack up`, e.g. "
             "`CLEARLAKE_LAKEFS_PORT`, `CLEARLAKE_DASK_DASHBOARD_PORT`"),
    Variable("XDG_CACHE_HOME", "where builds and caches live (default `~/.cache`)"),
)


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or None


@dataclass(frozen=True)
class Settings:
    """The environment as clearlake reads it: unset and empty are both None.

    Attributes:
        home: the stack's state directory (resolved; not created).
        cache_home: the user's cache directory (`$XDG_CACHE_HOME` or `~/.cache`).
        metrics_cache_dir: `clearlake score`'s cache directory, if set.
        max_pixels: the decode limit in pixels, if set (`1_000_000` spellings allowed).
        lakefs_endpoint: lakeFS's base URL, if set.
        lakefs_access_key_id: the access key id, if set.
        lakefs_secret_access_key: the secret key, if set (never in a repr).
        storage_namespace: the namespace prefix of new repositories, if set.
        metrics_repository: the metrics store's repository.
        prefect_api_url: the Prefect API URL, if set.
        bridge_url: the bridge's URL for people's browsers, if set.
        flow_run_id: the Prefect flow run this process runs, if any.
        signing_key: the HMAC key, if set (never in a repr).
        webhook_secret: the bridge's shared secret, if set (never in a repr).
        dask_address: a Dask scheduler's address, if set.
        scripts_repositories: repositories metric scripts may be loaded from.
        ports: service name (`lakefs`, `dask-dashboard`, …) → port, as set.
    """

    home: Path
    cache_home: Path
    metrics_cache_dir: Path | None = None
    max_pixels: int | None = None
    lakefs_endpoint: str | None = None
    lakefs_access_key_id: str | None = None
    lakefs_secret_access_key: str | None = field(default=None, repr=False)
    storage_namespace: str | None = None
    metrics_repository: str = DEFAULT_METRICS_REPOSITORY
    prefect_api_url: str | None = None
    bridge_url: str | None = None
    flow_run_id: str | None = None
    signing_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    dask_address: str | None = None
    scripts_repositories: frozenset[str] = frozenset()
    ports: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `environ` (default `os.environ`).

        Raises:
            ValueError: `CLEARLAKE_MAX_PIXELS` is set but not a positive integer.
        """
        env = os.environ if environ is None else environ
        cache_dir = _optional(env, "CLEARLAKE_CACHE_DIR")
        return cls(
            home=Path(_optional(env, "CLEARLAKE_HOME") or Path.cwd() / ".clearlake").resolve(),
            cache_home=Path(_optional(env, "XDG_CACHE_HOME") or Path.home() / ".cache"),
            metrics_cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
            max_pixels=_max_pixels(env.get("CLEARLAKE_MAX_PIXELS", "")),
            lakefs_endpoint=_optional(env, "LAKEFS_ENDPOINT"),
            lakefs_access_key_id=_optional(env, "LAKEFS_ACCESS_KEY_ID"),
            lakefs_secret_access_key=_optional(env, "LAKEFS_SECRET_ACCESS_KEY"),
            storage_namespace=_optional(env, "CLEARLAKE_STORAGE_NAMESPACE"),
            metrics_repository=(_optional(env, "CLEARLAKE_METRICS_REPOSITORY")
                                or DEFAULT_METRICS_REPOSITORY),
            prefect_api_url=_optional(env, "PREFECT_API_URL"),
            bridge_url=_optional(env, "CLEARLAKE_BRIDGE_URL"),
            flow_run_id=_optional(env, "PREFECT__FLOW_RUN_ID"),
            signing_key=_optional(env, "CLEARLAKE_SIGNING_KEY"),
            webhook_secret=_optional(env, "CLEARLAKE_WEBHOOK_SECRET"),
            dask_address=_optional(env, "CLEARLAKE_DASK_ADDRESS"),
            scripts_repositories=frozenset(
                r.strip() for r in env.get("CLEARLAKE_SCRIPTS_REPOSITORIES", "").split(",")
                if r.strip()),
            ports=_ports(env),
        )


def _ports(env: Mapping[str, str]) -> dict[str, int]:
    ports = {}
    for name, value in env.items():
        service = re.fullmatch(r"CLEARLAKE_([A-Z0-9_]+)_PORT", name)
        if service is None or not value:
            continue
        if not (value.isdigit() and 0 < int(value) < 65536):
            raise ValueError(f"{name}={value!r} is not a port number")
        ports[service.group(1).lower().replace("_", "-")] = int(value)
    return ports


def _max_pixels(raw: str) -> int | None:
    raw = raw.strip().replace("_", "")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"CLEARLAKE_MAX_PIXELS={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"CLEARLAKE_MAX_PIXELS={value} must be positive")
    return value


def settings() -> Settings:
    """The current environment's settings."""
    return Settings.from_environment()


def cache_dir() -> Path:
    """Where builds and caches live, outside any checkout: `$XDG_CACHE_HOME/clearlake`."""
    return settings().cache_home / "clearlake"
