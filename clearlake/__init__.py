"""clearlake: versioned, data-driven image-quality pipelines on lakeFS, Prefect and Dask."""


def __getattr__(name: str) -> str:
    # `__version__` on first use: importlib.metadata costs a tenth of `clearlake --help`.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("clearlake")
        except PackageNotFoundError:  # running from a source tree that was not installed
            found = "0.0.0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'clearlake' has no attribute {name!r}")
