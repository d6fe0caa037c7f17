"""clearlake's Prefect blocks, registered by `prefect block register -m blocks`."""

from blocks.lakefs import LakeFSCredentials, LakeFSRepository

__all__ = ["LakeFSCredentials", "LakeFSRepository"]
