"""clearlake's Prefect blocks, registered by `prefect block register -m clearlake.blocks`."""

from clearlake.blocks.dask import DaskCluster
from clearlake.blocks.lakefs import LakeFSCredentials, LakeFSRepository

__all__ = ["DaskCluster", "LakeFSCredentials", "LakeFSRepository"]
