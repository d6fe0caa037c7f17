"""Metric modules kept in a lakeFS repository, pinned by commit: the seed's scripts repository.

An image repository opts in with `_clearlake/config.yaml` on its branch::

    scripts: lakefs://scripts/main@<commit id>

Every `*.py` object of that commit is imported, and its module-level functions
marked with `clearlake.quality.registry.metric` become metrics (source
`scripts@<commit>`), versioned like any other metric: changing one function
changes that metric's version only. Changing the pin is an ordinary commit, and
its run computes the new or changed metrics for every image of the branch.

**This is code execution.** A module from the scripts repository runs inside the
flow and on every Dask worker with their credentials, so whoever can write to that
repository — and whoever can write `_clearlake/config.yaml` on a watched branch,
which chooses the repository — runs code there. It is therefore off unless the
operator names the repositories that may be used, in the flow's environment:
`CLEARLAKE_SCRIPTS_REPOSITORIES=scripts[,other]`. A config that names another is
refused (the run fails, saying so); there is no default.
"""

from __future__ import annotations

import linecache
import re
import sys
import threading
import types
from dataclasses import dataclass

import yaml

from clearlake.errors import ConfigurationError, NotFoundError
from clearlake.lakefs import LakeFS
from clearlake.layout import CONFIG_PATH
from clearlake.quality.registry import _MARK, VERSION_NAME, Metric, MetricSet, available
from clearlake.settings import settings

ALLOWED_ENV = "CLEARLAKE_SCRIPTS_REPOSITORIES"
_PIN = re.compile(r"lakefs://(?P<repository>[a-z0-9][a-z0-9-]{2,62})/(?P<ref>[^@\s]+)"
                  r"@(?P<commit>[0-9a-f]{12,64})")
_loaded: dict[tuple[str, str], list[Metric]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ScriptsPin:
    """A scripts repository at a commit (`lakefs://<repository>/<ref>@<commit>`).

    Attributes:
        repository: the lakeFS repository holding the metric modules.
        ref: the branch the commit was taken from (informative: the commit is what counts).
        commit: the commit id (at least 12 hex digits).
    """

    repository: str
    ref: str
    commit: str

    def __str__(self) -> str:
        return f"lakefs://{self.repository}/{self.ref}@{self.commit}"

    @classmethod
    def parse(cls, text: str) -> ScriptsPin:
        """Read a pin.

        Raises:
            ConfigurationError: not of the form `lakefs://repo/ref@<commit id>`.
        """
        match = _PIN.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ConfigurationError(
                f"scripts pin {text!r} is not of the form lakefs://<repository>/<branch>@<commit "
                "id> (a commit, so that what runs changes only with a commit of the config)")
        return cls(**match.groupdict())


def allowed_repositories() -> set[str]:
    """The scripts repositories the operator allows (`CLEARLAKE_SCRIPTS_REPOSITORIES`)."""
    return set(settings().scripts_repositories)


def configured(lakefs: LakeFS, repository: str, ref: str) -> ScriptsPin | None:
    """The scripts pin of `repository` at `ref` (`_clearlake/config.yaml`), None if it has none.

    Raises:
        ConfigurationError: the config is malformed, or names a scripts repository the
            operator has not allowed.
    """
    try:
        data = lakefs.get_object(repository, ref, CONFIG_PATH)
    except NotFoundError:
        return None
    where = f"{repository}@{ref}:{CONFIG_PATH}"
    try:
        config = yaml.safe_load(data) or {}
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{where} is not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise ConfigurationError(f"{where} must be a mapping")
    if config.get("scripts") is None:
        return None
    pin = ScriptsPin.parse(config["scripts"])
    if pin.repository not in allowed_repositories():
        raise ConfigurationError(
            f"{where} pins metrics from {pin}, but scripts repository {pin.repository!r} is not "
            f"allowed: loading it runs its code. The operator allows it by setting "
            f"{ALLOWED_ENV}={pin.repository} in the flow's environment")
    return pin


def metrics_at(lakefs: LakeFS, repository: str, ref: str) -> MetricSet:
    """The metrics a run of `repository` at `ref` computes: the built-ins, the installed
    entry points and the scripts `ref`'s `_clearlake/config.yaml` pins (if any).

    Raises:
        ConfigurationError: as `configured` and `load` do.
    """
    pin = configured(lakefs, repository, ref)
    return available(load(lakefs, pin) if pin is not None else [])


def load(lakefs: LakeFS, pin: ScriptsPin) -> list[Metric]:
    """The metrics of the scripts repository at the pinned commit (imported once per process).

    Raises:
        NotFoundError: the repository or commit does not exist.
        ConfigurationError: a module cannot be imported, or marks an invalid metric.
    """
    commit = lakefs.get_commit(pin.repository, pin.commit).id
    if not commit.startswith(pin.commit):
        raise ConfigurationError(f"{pin} is not a commit id of {pin.repository}")
    key = (pin.repository, commit)
    with _lock:
        if key not in _loaded:
            _loaded[key] = _import(lakefs, pin.repository, commit)
        return list(_loaded[key])


def _import(lakefs: LakeFS, repository: str, commit: str) -> list[Metric]:
    package = f"clearlake_scripts.{re.sub(r'[^a-z0-9_]', '_', repository)}_{commit[:16]}"
    metrics = []
    for info in lakefs.list_objects(repository, commit):
        if not info.path.endswith(".py") or info.path.startswith("_"):  # _lakefs_actions/ …
            continue
        stem = re.sub(r"\W", "_", info.path[:-3])
        text = lakefs.get_object(repository, commit, info.path).decode("utf-8")
        metrics += module_metrics(
            text, f"{package}.{stem}", f"<lakefs://{repository}@{commit}/{info.path}>",
            version_name=f"clearlake_scripts.{repository}.{stem}", source=f"scripts@{commit[:12]}")
    return metrics


def module_metrics(
    text: str, name: str, filename: str, *, version_name: str, source: str
) -> list[Metric]:
    """Import one metric module from its source text; return the metrics it marks.

    Args:
        text: the module's source.
        name: its import name (unique: it carries the commit).
        filename: where it came from, for tracebacks and `inspect` (through linecache).
        version_name: its name in versions, without the commit: the same code at
            another commit keeps its version.
        source: the metrics' source label (`scripts@<commit>`).

    Raises:
        ConfigurationError: the module cannot be imported, or marks an invalid metric.
    """
    # inspect reads a function's source (to version it) from linecache.
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    setattr(module, VERSION_NAME, version_name)
    sys.modules[name] = module
    try:
        exec(compile(text, filename, "exec"), module.__dict__)  # opted in: see above
    except Exception as error:  # (any error of someone else's module)
        del sys.modules[name]
        raise ConfigurationError(
            f"metric module {filename} cannot be imported: {type(error).__name__}: {error}"
        ) from error
    return [Metric.of(getattr(value, _MARK), value, source)
            for value in list(vars(module).values())
            if isinstance(value, types.FunctionType) and value.__module__ == name
            and hasattr(value, _MARK)]
