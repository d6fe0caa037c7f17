"""The review pages: thumbnails of a ref's results, one image's lineage, quality diffs.

Served by the bridge (`clearlake.bridge`) under `/review`; see `clearlake.review.app`.
"""

from clearlake.review.app import ReviewApp, ReviewConfig, create_review_app

__all__ = ["ReviewApp", "ReviewConfig", "create_review_app"]
