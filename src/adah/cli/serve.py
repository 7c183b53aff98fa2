"""``adah serve``: the search page and JSON API over an index (registered on :data:`adah.cli.app`)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import typer

from adah.cli.common import _friendly_errors, app
from adah.errors import AdahError

LOOPBACK_NAMES = ("localhost",)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one); AdahError when the port is
    taken or the host is not an address of this machine."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise AdahError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AdahError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@app.command()
@_friendly_errors
def serve(
    index: Path = typer.Option(..., help="An index folder written by adah index build."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback is reachable by others."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    max_body_mb: float = typer.Option(10.0, min=0.001, help="Largest request body, in MiB (413 above)."),
    max_k: int = typer.Option(100, min=1, help="Largest top-k a request may ask for (422 above)."),
    max_text: int = typer.Option(1000, min=1, help="Longest query text in characters (422 above)."),
    log_level: str = typer.Option("info", help="uvicorn's log level: critical, error, warning, info or debug."),
) -> None:
    """Serve the search page at http://HOST:PORT/ and its JSON API (/api/...)."""
    import uvicorn

    from adah.index import Index
    from adah.serve import Limits, create_app

    if log_level not in LOG_LEVELS:
        raise AdahError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_k=max_k, max_text_chars=max_text,
                    default_k=min(10, max_k))
    if not is_loopback(host):
        typer.echo(f"warning: listening on {host}, not loopback: anyone who can reach this machine can query "
                   "the index and read its thumbnails and captions (there is no authentication)", err=True)
    loaded = Index.load(index)
    sock = bind(host, port)
    # not loaded.info(): it reads the image input size, which builds the image branch a text query never needs
    typer.echo(f"index {index}: {len(loaded)} items, {loaded.bits} bits")
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    typer.echo(f"serving http://{shown}:{sock.getsockname()[1]}/ (Ctrl+C to stop)")
    server = uvicorn.Server(uvicorn.Config(create_app(loaded, limits=limits), log_level=log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
