"""What every ``adah`` command shares: the typer app, the one-line error wrapper and
``--set`` parsing. Command modules import from here, never from each other."""

from __future__ import annotations

import functools
import json

import typer

from adah.errors import AdahError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Attention-aware deep adversarial cross-modal hashing (ADAH).")
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _friendly_errors(fn):
    """Print user errors as one line on stderr (exit 2) unless --debug; any other OSError too,
    as ``path: reason``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (AdahError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except OSError as exc:  # last resort for file-system faults nobody foresaw: one line naming the path
            if _state["debug"]:
                raise
            typer.echo(f"error: {describe_os_error(exc)}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def describe_os_error(exc: OSError) -> str:
    """``path: reason`` for an OSError (both paths of a rename), without the errno prefix."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else f"{reason} ({type(exc).__name__})"


def _parse_sets(items: list[str]) -> dict[str, object]:
    """``section.key=value`` pairs; values are parsed as JSON when they can be."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise AdahError(f"--set expects section.key=value (e.g. train.lr=0.001), got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


