"""clearlake's Prefect blocks, registered by `prefect block register -m blocks`."""

from blocks.dask import DaskCluster
from blocks.lakefs import LakeFSCredentials, LakeFSRepository

__all__ = ["DaskCluster", "LakeFSCredentials", "LakeFSRepository"]
