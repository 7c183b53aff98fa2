"""Exceptions raised on bad user input: the CLI prints them as one line."""


class AdahError(ValueError):
    """A problem with user input (file, field, shape, flag) that the user can fix."""


class ServiceUnavailable(AdahError):
    """A service adah depends on (a Milvus server) cannot answer now; the same request may work
    later (``adah serve`` answers 503)."""
