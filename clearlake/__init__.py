"""clearlake: versioned, data-driven image-quality pipelines on lakeFS, Prefect and Dask."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clearlake")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
