"""Exceptions raised on bad user input: the CLI prints them as one line."""


class AdahError(ValueError):
    """A problem with user input (file, field, shape, flag) that the user can fix."""
