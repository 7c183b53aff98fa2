"""HTTP service over a search index: JSON endpoints and one HTML page (``adah serve``)."""

from adah.serve.app import create_app
from adah.serve.limits import Limits
from adah.serve.net import is_loopback

__all__ = ["Limits", "create_app", "is_loopback"]
