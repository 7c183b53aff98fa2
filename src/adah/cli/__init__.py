"""Command line: ``adah demo``, ``adah train``, ``adah eval``, ... Each command parses its flags,
calls one library function and prints. Errors print one line and exit 2; ``--debug`` shows the
traceback.

Layout: ``common`` (the app, error wrapper, ``--set`` parsing) is imported by every command
module; this package imports the command modules so that they register themselves."""

from __future__ import annotations

import sys

from adah.cli import commands, index, serve  # noqa: F401 - register their commands
from adah.cli.common import app
from adah.cli.features import features_app

app.add_typer(features_app, name="features")

LIST_OPTIONS = ("--bits", "--methods", "--variants")


def expand_list_options(argv: list[str]) -> list[str]:
    """``--bits 16 32 64`` -> ``--bits 16 --bits 32 --bits 64`` (typer has no variadic options)."""
    out: list[str] = []
    current = None
    for arg in argv:
        if arg in LIST_OPTIONS:
            current = arg
            out.append(arg)
            continue
        if current and not arg.startswith("-") and out[-1] != current:
            out.append(current)
        elif arg.startswith("-"):
            current = None
        out.append(arg)
    return out


def main() -> None:
    app(args=expand_list_options(sys.argv[1:]), prog_name="adah")


if __name__ == "__main__":
    sys.exit(main())
