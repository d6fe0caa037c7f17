"""The local stack: lakeFS (built from source) and a Prefect server, started on loopback."""
