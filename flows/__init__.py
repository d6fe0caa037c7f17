"""Prefect flows: thin orchestration of clearlake functions."""

# What a classify-commit run imports, some of it lazily (the Dask task runner, pyarrow
# for the results table). `clearlake classify` imports it before it starts its run, as
# the stack's forkserver has it for a triggered run: neither run waits for imports
# before its first batch.
CLASSIFY_RUN_IMPORTS = ("prefect.engine", "prefect.flow_engine", "prefect_dask",
                        "clearlake.flows.classify", "pyarrow.parquet", "pyarrow.compute")
# The forkserver starts every flow's runs: the other flows too, and scikit-learn, which
# training uses (labelling needs only NumPy).
FLOW_RUN_IMPORTS = (*CLASSIFY_RUN_IMPORTS, "clearlake.flows.reconcile", "clearlake.flows.train",
                    "pyarrow.dataset", "sklearn.linear_model", "sklearn.naive_bayes",
                    "sklearn.pipeline", "sklearn.preprocessing", "sklearn.model_selection")
