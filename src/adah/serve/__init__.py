"""HTTP service over a search index: JSON endpoints and one HTML page (``adah serve``)."""

from adah.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
