"""``adah serve``: the search page and JSON API over an index (registered on :data:`adah.cli.app`)."""

from __future__ import annotations

import math

import socket
from pathlib import Path
from typing import Optional

import typer

from adah.cli.common import _friendly_errors, app
from adah.errors import AdahError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


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
    max_image_pixels: int = typer.Option(40_000_000, min=1, help="Largest upload, width x height from its header (413 "
                                         "above)."),
    decode_side: int = typer.Option(512, min=1, help="Uploads are decoded reduced to this many pixels on the shorter "
                                    "side (or the model's input size when larger)."),
    max_decodes: int = typer.Option(2, min=1, help="Images decoded at the same time; other requests wait (each takes "
                                    "up to ~4 bytes a pixel)."),
    thumbnail_cache_mb: float = typer.Option(64.0, min=0.001, help="Thumbnail cache size in MiB (PNGs and the "
                                             "reduced pictures they are cut from)."),
    log_level: str = typer.Option("info", help="uvicorn's log level: critical, error, warning, info or debug."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The checkpoint (default: the one the "
                                              "index was built with; its fingerprint must match)."),
) -> None:
    """Serve the search page at http://HOST:PORT/ and its JSON API (/api/...)."""
    import uvicorn

    from adah.index import Index
    from adah.serve import Limits, create_app, is_loopback
    from adah.serve.errors import log_config

    if log_level not in LOG_LEVELS:
        raise AdahError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    for name, value in (("--max-body-mb", max_body_mb), ("--thumbnail-cache-mb", thumbnail_cache_mb)):
        if not math.isfinite(value) or value > 2**20:  # 1e400 parses to inf: a bound, not "no bound"
            raise AdahError(f"{name} must be a finite number of MiB up to {2**20}, got {value}")
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_k=max_k, max_text_chars=max_text,
                    default_k=min(10, max_k), max_image_pixels=max_image_pixels, decode_side=decode_side,
                    max_decodes=max_decodes, thumbnail_cache_bytes=int(thumbnail_cache_mb * 2**20))
    if not is_loopback(host):
        typer.echo(f"warning: listening on {host}, not loopback: anyone who can reach this machine can query "
                   "the index and read its thumbnails and captions (there is no authentication)", err=True)
    loaded = Index.load(index, model=checkpoint or "auto")
    sock = bind(host, port)
    # not loaded.info(): it reads the image input size, which builds the image branch a text query never needs
    typer.echo(f"index {index}: {len(loaded)} items, {loaded.bits} bits")
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    typer.echo(f"serving http://{shown}:{sock.getsockname()[1]}/ (Ctrl+C to stop)")
    server = uvicorn.Server(uvicorn.Config(create_app(loaded, limits=limits), log_level=log_level,
                                           log_config=log_config(log_level)))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
