"""A Prefect block naming an existing Dask cluster: how a team scales out beyond one machine."""

from __future__ import annotations

import re
from importlib.metadata import version

from prefect.blocks.core import Block
from pydantic import Field, field_validator

# Dask's own icon, at its path in the installed release's source (and package).
LOGO_PATH = "distributed/http/static/images/favicon.ico"
DISTRIBUTED_VERSION = version("distributed")
# What `distributed.Client` accepts: an optional protocol, then host:port.
_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?\S+:\d+$")


class DaskCluster(Block):
    """An existing Dask cluster that clearlake's flows run their batches on.

    Each worker needs clearlake installed and lakeFS credentials in its own
    environment (`LAKEFS_*`): none travel with the tasks. TLS and other security
    settings come from the workers' and the flow's Dask configuration.

    Example:
        ```python
        from clearlake.blocks import DaskCluster

        DaskCluster(address="tcp://10.0.0.5:8786").save("farm")
        # then: clearlake classify REPO BRANCH --dask-cluster farm

        cluster = DaskCluster.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "clearlake Dask Cluster"
    _logo_url = (f"https://raw.githubusercontent.com/dask/distributed/{DISTRIBUTED_VERSION}/"
                 f"{LOGO_PATH}")
    _documentation_url = "https://distributed.dask.org/en/stable/client.html"

    address: str = Field(description="The Dask scheduler's address, e.g. tcp://10.0.0.5:8786.")

    @field_validator("address")
    @classmethod
    def _looks_like_an_address(cls, address: str) -> str:
        address = address.strip()
        if not _ADDRESS.match(address):
            raise ValueError(f"not a Dask scheduler address (like tcp://host:8786): {address!r}")
        return address
