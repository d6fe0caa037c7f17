"""Prefect flows: thin orchestration of clearlake functions."""

# What a flow run imports, some of it lazily (the Dask task runner, scikit-learn to
# label, pyarrow for the results table). The stack's forkserver imports it once for
# every triggered run, and `clearlake classify` before it starts its run: neither run
# waits for imports before its first batch.
RUN_IMPORTS = ("prefect.engine", "prefect.flow_engine", "prefect_dask",
               "clearlake.flows.classify", "clearlake.flows.reconcile",
               "clearlake.flows.train", "sklearn.naive_bayes", "sklearn.pipeline",
               "sklearn.preprocessing", "pyarrow.parquet", "pyarrow.compute",
               "pyarrow.dataset")
