"""Metrics as named units, each with its own version, from three sources.

A metric is a function of one decoded image to one finite float
(``fn(image: DecodedImage) -> float``) under a name. Its **version** is derived
from what determines its values (:func:`fingerprint`): the syntax tree of its
code and of everything it calls inside its own package or clearlake — docstrings,
comments and annotations left out —, the plain values (parameters) that code
reads from module globals, the versions of the libraries it reaches, and the
decoder version. A docstring or comment edit keeps the version; a changed
constant, line of code or library version gives a new one, for that metric only.

Sources, merged into one :class:`MetricSet` by :func:`available`:

* ``built-in``: :data:`clearlake.quality.metrics.BUILTIN_METRICS`.
* ``entry point <distribution>``: the Python entry-point group ``clearlake.metrics``;
  the entry point's name is the metric's name, its object the function. An
  installed package adds metrics without forking clearlake::

      [project.entry-points."clearlake.metrics"]
      stripe_score = "my_metrics:stripe_score"

* ``scripts@<commit>``: Python modules kept in a lakeFS repository and pinned by
  commit in an image repository's ``_clearlake/config.yaml``
  (``scripts: lakefs://scripts/main@<commit>``); see :mod:`clearlake.scripts`.
  Module-level functions marked with :func:`metric` are metrics.

:meth:`MetricSet.compute` runs the metrics asked for on one image and turns a
metric that raises, or returns something other than a finite number, into a
per-image failure naming the metric (:class:`MetricFailure`), never an exception.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import linecache
import math
import re
import sys
import textwrap
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clearlake.errors import ConfigurationError
from clearlake.quality.decode import DECODER_VERSION
from clearlake.quality.types import DecodedImage

ENTRY_POINT_GROUP = "clearlake.metrics"
BUILTIN = "built-in"
METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MARK = "__clearlake_metric__"
VERSION_NAME = "__clearlake_version_name__"

#: Metric sets from before metrics had versions of their own (stored analyses, results
#: markers and models name them), and the versions of today's built-ins that reproduce
#: their values bit for bit (`tests/test_registry.py` checks it; a built-in whose code
#: changed with the same values, as when the spectral metrics began sharing their
#: spectra, is mapped to its new version). Read as those versions, nothing is computed
#: again.
LEGACY_METRIC_SETS: dict[str, dict[str, str]] = {
    "ms-2c13a2439865": {
        "laplacian_var_score": "b966d271c3ae",
        "sobel_y_var_score": "6e82e6bf0bf3",
        "sobel_x_var_score": "6eaf7e58cc54",
        "edge_width_score": "d55867c3b0c2",
        "spectral_slope_score": "0f190950fead",
        "luma_peak_score": "0718cfeed8ff",
        "fft_hf_score": "0eb3524aa4d8",
        "chroma_peak_score": "d6bccccd2649",
    },
}

MetricFunction = Callable[[DecodedImage], float]


def metric(name: str) -> Callable[[MetricFunction], MetricFunction]:
    """Mark a module-level function of a scripts module as the metric `name`.

    Example (a file in the scripts repository)::

        from clearlake.quality.registry import metric

        @metric("mean_luma_score")
        def mean_luma(image):
            return float(image.grey.mean())
    """
    _check_name(name)

    def mark(function: MetricFunction) -> MetricFunction:
        setattr(function, _MARK, name)
        return function

    return mark


@dataclass(frozen=True)
class Metric:
    """One metric: its name, version, where it comes from, and its function.

    Attributes:
        name: the column name (``[a-z][a-z0-9_]*``).
        version: 12 hex digits of :func:`fingerprint`.
        source: ``built-in``, ``entry point <distribution>`` or ``scripts@<commit>``.
        function: ``fn(image) -> float``.
    """

    name: str
    version: str
    source: str
    function: MetricFunction = field(compare=False, repr=False)

    @classmethod
    def of(cls, name: str, function: MetricFunction, source: str) -> Metric:
        """The metric `name` computed by `function`, versioned by its fingerprint."""
        _check_name(name)
        if not callable(function):
            raise ConfigurationError(f"metric {name!r} from {source} is not a function")
        return cls(name, fingerprint(function), source, function)


class MetricFailure(str):
    """Why one metric failed on one image (a metric that raised, or returned a non-finite or
    non-numeric value). A `str`, so it travels and is stored as plain text."""


class MetricSet:
    """An ordered set of metrics with unique names: what a run computes.

    Order is computing order: built-ins first, in an order that lets them share
    intermediate results (one Sobel pass, one FFT), then plugins.
    """

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics: dict[str, Metric] = {}
        for m in metrics:
            other = self._metrics.get(m.name)
            if other is not None:
                raise ConfigurationError(
                    f"two metrics are named {m.name!r}: one from {other.source}, one from "
                    f"{m.source}; rename one of them")
            self._metrics[m.name] = m

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics.values())

    def __len__(self) -> int:
        return len(self._metrics)

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def __getitem__(self, name: str) -> Metric:
        return self._metrics[name]

    @property
    def names(self) -> tuple[str, ...]:
        """Metric names, in computing order."""
        return tuple(self._metrics)

    @property
    def versions(self) -> dict[str, str]:
        """``{name: version}``."""
        return {m.name: m.version for m in self}

    @property
    def id(self) -> str:
        """``ms-`` + 12 hex digits identifying the whole set (its names and versions)."""
        blob = json.dumps(sorted(self.versions.items()), separators=(",", ":"))
        return "ms-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def select(self, names: Iterable[str]) -> MetricSet:
        """The metrics named, in this set's order.

        Raises:
            ConfigurationError: a name this set does not have.
        """
        wanted = set(names)
        unknown = sorted(wanted - set(self._metrics))
        if unknown:
            raise ConfigurationError(
                f"unknown metrics {unknown}; available: {', '.join(self._metrics)}")
        return MetricSet(m for m in self if m.name in wanted)

    def missing(self, have: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
        """The metrics whose (name, version) `have` lacks (`have`: {name: {version: …}})."""
        return [m for m in self if m.version not in have.get(m.name, {})]

    def compute(
        self, image: DecodedImage, wanted: Sequence[Metric] | None = None
    ) -> tuple[dict[str, float], dict[str, MetricFailure]]:
        """Compute `wanted` (default: all) on one image; built-ins share intermediates.

        Returns:
            ({name: value}, {name: failure}): every wanted metric is in exactly one.
        """
        from clearlake.quality import metrics as builtin

        values: dict[str, float] = {}
        failures: dict[str, MetricFailure] = {}
        with builtin.sharing(image):
            for m in self if wanted is None else wanted:
                value, failure = _run(m, image)
                if failure is None:
                    values[m.name] = value
                else:
                    failures[m.name] = failure
        return values, failures

    def spec(self) -> list[dict[str, str]]:
        """Plain data naming each metric (what a Dask task receives and checks)."""
        return [{"name": m.name, "version": m.version, "source": m.source} for m in self]


def _run(m: Metric, image: DecodedImage) -> tuple[float, MetricFailure | None]:
    """One metric on one image: its value, or why it has none.

    Any exception is caught here on purpose: a metric is code someone else wrote (an
    installed plugin, a scripts repository), and one metric's error on one image must
    not end a run that measures thousands.
    """
    try:
        value = m.function(image)
    except Exception as error:  # (a plugin's error is a per-image failure)
        return 0.0, MetricFailure(f"metric {m.name!r} ({m.source}) raised "
                                  f"{type(error).__name__}: {error}")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return 0.0, MetricFailure(f"metric {m.name!r} ({m.source}) returned "
                                  f"{type(value).__name__}, not a number")
    number = float(value)
    if not math.isfinite(number):
        return 0.0, MetricFailure(f"metric {m.name!r} ({m.source}) returned {number}, "
                                  "not a finite number")
    return number, None


# --- sources ------------------------------------------------------------------------------


@functools.cache
def builtin_metrics() -> MetricSet:
    """clearlake's own metrics, in computing order."""
    from clearlake.quality.metrics import BUILTIN_METRICS

    return MetricSet(Metric.of(name, function, BUILTIN) for name, function in BUILTIN_METRICS)


def entry_point_metrics() -> list[Metric]:
    """Metrics installed packages declare in the entry-point group ``clearlake.metrics``.

    Raises:
        ConfigurationError: an entry point that cannot be loaded (naming it).
    """
    found = []
    for entry in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                        key=lambda e: e.name):
        distribution = entry.dist.name if entry.dist is not None else "unknown distribution"
        source = f"entry point {distribution}"
        try:
            function = entry.load()
        except Exception as error:  # (any import error of a plugin)
            raise ConfigurationError(
                f"metric {entry.name!r} ({source}, {entry.value}) cannot be loaded: "
                f"{type(error).__name__}: {error}") from error
        found.append(Metric.of(entry.name, function, source))
    return found


def available(
    scripts: Sequence[Metric] = (), *, entry_points: bool = True
) -> MetricSet:
    """Every metric a run can compute: built-ins, installed entry points, and `scripts`
    (loaded from a scripts repository, see `clearlake.scripts.load`)."""
    metrics = list(builtin_metrics())
    if entry_points:
        metrics += entry_point_metrics()
    return MetricSet([*metrics, *scripts])


def available_for(names: Iterable[str]) -> MetricSet:
    """The built-in metrics when they hold every one of `names` (no installed plugin is
    loaded), else every available metric (`available`)."""
    builtins = builtin_metrics()
    return builtins if set(names) <= set(builtins.names) else available()


def from_spec(spec: Sequence[Mapping[str, str]], metric_set: MetricSet) -> MetricSet:
    """The metrics a `MetricSet.spec` names, taken from `metric_set` (this process's own).

    Raises:
        ConfigurationError: this process lacks one, or computes another version of it
            (a worker with other code or libraries than the flow that planned the run).
    """
    wrong = [f"{s['name']}@{s['version']} ({s['source']})" for s in spec
             if s["name"] not in metric_set or metric_set[s["name"]].version != s["version"]]
    if wrong:
        here = ", ".join(f"{m.name}@{m.version}" for m in metric_set)
        raise ConfigurationError(
            f"this process cannot compute {', '.join(wrong)}; it has {here or 'no metrics'} "
            "(install the same clearlake, plugins and library versions on every worker)")
    return metric_set.select(s["name"] for s in spec)


# --- versions -----------------------------------------------------------------------------

_PLAIN = (int, float, str, bytes, bool, type(None))


def fingerprint(function: Callable[..., Any]) -> str:
    """12 hex digits of the SHA-256 of what determines a metric function's values.

    Covered: the syntax tree (without docstrings and annotations; comments are not in
    it) of `function` and of every function and class it reaches inside its own
    top-level package or clearlake; the plain values (ints, floats, strings, tuples of
    them) those read from their module's globals; the versions of the other packages
    they reach (NumPy, OpenCV, …); and the decoder version, since decoding makes the
    pixels every metric reads.
    """
    root = inspect.unwrap(function)
    scope = {"clearlake", (getattr(root, "__module__", None) or "").split(".")[0]}
    code: dict[str, str] = {}
    params: dict[str, Any] = {}
    libraries: dict[str, str] = {}
    pending: list[Any] = [root]
    while pending:
        obj = inspect.unwrap(pending.pop())
        module = _version_name(obj)
        key = f"{module}.{obj.__qualname__}"
        if key in code:
            continue
        code[key], referenced = _parsed(obj)
        for value, name in referenced:
            if isinstance(value, _PLAIN) or _plain_tuple(value):
                params[f"{module}.{name}"] = value
            elif _in_scope(value, scope):
                if inspect.isfunction(inspect.unwrap(value)) or inspect.isclass(value):
                    pending.append(value)
            else:
                library = _library_of(value)
                if library:
                    libraries[library] = _library_version(library)
    blob = json.dumps({"code": code, "params": params, "libraries": libraries,
                       "decoder": DECODER_VERSION}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _version_name(obj: Any) -> str:
    """The name `obj`'s module has in versions: its `__clearlake_version_name__` if it sets
    one (a scripts module, whose import name carries the commit it came from: the same
    code at another commit is the same version), else its import name."""
    namespace = getattr(obj, "__globals__", None)
    if namespace is None:
        namespace = vars(sys.modules[obj.__module__]) if obj.__module__ in sys.modules else {}
    return namespace.get(VERSION_NAME, obj.__module__)


@functools.lru_cache(maxsize=1024)
def _parsed(obj: Any) -> tuple[str, tuple[tuple[Any, str], ...]]:
    """The canonical syntax tree of a function or class, and the globals it names."""
    tree = _syntax_tree(obj)
    namespace = vars(sys.modules[obj.__module__]) if obj.__module__ in sys.modules else {}
    namespace = getattr(obj, "__globals__", namespace)
    return (ast.dump(tree, annotate_fields=False, include_attributes=False),
            tuple(_referenced(tree, namespace)))


def _syntax_tree(obj: Any) -> ast.AST:
    """`obj`'s definition as `ast.parse` of its own source gives it, stripped (`_strip`).

    A module-level definition is taken from its module's tree, parsed once for all of
    them: the same tree, without `inspect` finding each block again (most of the cost
    of versioning the built-ins). Anything else is parsed from its own source.
    """
    node = _top_level_definition(obj)
    if node is not None:
        return ast.Module(body=[node], type_ignores=[])
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as error:
        raise ConfigurationError(
            f"cannot read the source of {obj!r} to version it: {error}") from error
    return _strip(ast.parse(source))


def _top_level_definition(obj: Any) -> ast.AST | None:
    """The stripped node of a function or class defined at its module's top level, None
    otherwise (a method, a nested definition, a lambda: `inspect` finds those)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__qualname__ != obj.__name__:
        return None
    if inspect.isfunction(obj):
        key: tuple[str, int | None] = (obj.__name__, obj.__code__.co_firstlineno)
    else:
        key = (obj.__name__, None)
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:  # built in: no source
        return None
    if not file or not (module := sys.modules.get(obj.__module__)):
        return None
    if not (file.startswith("<") and file.endswith(">")):
        linecache.checkcache(file)  # as `inspect` does: a file changed since it was read
    lines = linecache.getlines(file, vars(module))
    return _definitions("".join(lines)).get(key) if lines else None


@functools.lru_cache(maxsize=64)
def _definitions(source: str) -> dict[tuple[str, int | None], ast.AST]:
    """A module's top-level definitions, stripped: functions by (name, first line: the first
    decorator's if any, as `co_firstlineno` counts), classes by (name, None) where the
    module defines that name once (else `inspect` decides which one it means)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    classes = Counter(node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef))
    found: dict[tuple[str, int | None], ast.AST] = {}
    for node in _strip(tree).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found[(node.name, first)] = node
        elif isinstance(node, ast.ClassDef) and classes[node.name] == 1:
            found[(node.name, None)] = node
    return found


def _strip(tree: ast.AST) -> ast.AST:
    """`tree` without docstrings and annotations (in place), which do not make values."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
        elif isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, ast.AnnAssign):
            node.annotation = ast.Constant(None)
    return tree


def _referenced(tree: ast.AST, namespace: Mapping[str, Any]) -> Iterator[tuple[Any, str]]:
    """The global objects a syntax tree names: `x`, and `module.x` for in-scope modules."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in namespace:
            yield namespace[node.id], node.id
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and isinstance(namespace.get(node.value.id), types.ModuleType)):
            with contextlib.suppress(AttributeError):
                value = getattr(namespace[node.value.id], node.attr)
                if not isinstance(value, types.ModuleType):
                    yield value, f"{node.value.id}.{node.attr}"


def _plain_tuple(value: Any) -> bool:
    return isinstance(value, tuple | frozenset) and all(
        isinstance(v, _PLAIN) or _plain_tuple(v) for v in value)


def _module_name(value: Any) -> str:
    if isinstance(value, types.ModuleType):
        return value.__name__
    return getattr(inspect.unwrap(value), "__module__", None) or getattr(
        type(value), "__module__", "") or ""


def _in_scope(value: Any, scope: set[str]) -> bool:
    return _module_name(value).split(".")[0] in scope and not isinstance(value, types.ModuleType)


def _library_of(value: Any) -> str | None:
    top = _module_name(value).split(".")[0]
    if not top or top == "builtins" or top in sys.stdlib_module_names:
        return None
    return top


@functools.cache
def _library_version(top: str) -> str:
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    for distribution in importlib.metadata.packages_distributions().get(top, []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(distribution)
    return "unknown"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise ConfigurationError(
            f"metric name {name!r} is not valid: lower-case letters, digits and '_', "
            "starting with a letter, at most 64 characters")
