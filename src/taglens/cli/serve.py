"""``taglens serve``: the HTTP API and web page (FastAPI on uvicorn; see docs/server.md).

A thin use of `taglens.server.create_app`: the flags become `taglens.server.Settings` (validated
before anything loads), the port is checked to be free and the checkpoints to exist, then uvicorn
runs the app.
"""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path
from typing import Any

import click

from taglens.cli.options import Number, verbose_option
from taglens.engine.placement import DTYPES
from taglens.io.decode import DEFAULT_MAX_PIXELS
from taglens.models import registry

MiB = 1024 * 1024


@click.command("serve")
@click.option("--library", "library_dir", type=click.Path(file_okay=False), default=None, envvar="TAGLENS_LIBRARY",
              show_envvar=True,
              help="Library folder to search and show (default: $TAGLENS_LIBRARY, else the user data folder if it "
                   "holds a library; without one, search and image routes answer 404).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. Anything but loopback needs --api-key (or --insecure-no-auth).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--tagger", default=None,
              help=f"JoyTag checkpoint (default: the library's, else {registry.for_task('tag').hub_id}).")
@click.option("--siglip", default=None,
              help="SigLIP/CLIP checkpoint for classify and embed (default: the library's, else "
                   f"{registry.for_task('embed').hub_id}).")
@click.option("--nsfw-model", default=None,
              help=f"Image classifier for nsfw (default: the library's, else {registry.for_task('nsfw').hub_id}).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32",
              show_default=True, help="Model precision (int8: CPU only, faster, moves scores).")
@verbose_option
@click.option("--tf32", is_flag=True,
              help="float32 on CUDA: let matmuls and convolutions use TF32 (faster, ~1e-3 relative).")
@click.option("--api-key", envvar="TAGLENS_SERVE_API_KEY", show_envvar=True, default=None,
              help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY) on every API route; "
                   "at least 16 characters. Prefer the environment variable to the flag.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow binding to a non-loopback interface without an API key.")
@click.option("--max-batch-size", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Most images per model batch, gathered across concurrent requests.")
@click.option("--max-wait-ms", type=Number(0, 10_000), default=5.0, show_default=True,
              help="Longest a batch waits for more images after its first one arrived.")
@click.option("--queue-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Most images admitted at once; beyond it requests get 503 with Retry-After.")
@click.option("--max-images", "max_images_per_request", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most images in one request (422 beyond).")
@click.option("--max-request-size", "max_request_bytes", type=click.IntRange(min=1024), default=64 * MiB,
              show_default=True, help="Largest request body in bytes (413 beyond).")
@click.option("--max-image-size", "max_image_bytes", type=click.IntRange(min=1), default=32 * MiB,
              show_default=True, help="Largest image in bytes (413 for an upload, an error record for a path).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images with more pixels (decompression bombs).")
@click.option("--request-timeout", "request_timeout_s", type=Number(min=0.001), default=60.0,
              show_default=True, help="Seconds a request's images may take once admitted (504 beyond).")
@click.option("--body-timeout", "body_timeout_s", type=Number(min=0.001), default=30.0, show_default=True,
              help="Seconds a client has to send its request body (408 beyond).")
@click.option("--workers", "decode_workers", type=click.IntRange(1, 256), default=None,
              help="Decode threads (default: a quarter of the cores on a CPU, 1-4; min(4, cores) on a GPU).")
@click.option("--draft/--no-draft", default=False, show_default=True,
              help="Decode JPEGs at least twice the model's input size at a reduced DCT scale: faster, "
                   "but moves the scores. Off: a full decode, the reference numbers.")
@click.option("--allow-path", "allow_paths", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A folder whose files JSON requests may name by path (repeatable; none by default).")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="A web origin allowed to call the API from a browser, e.g. http://localhost:3000 (repeatable; "
                   "none by default).")
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="A Host header value to accept (repeatable; default: loopback names on a loopback bind).")
@click.option("--thumbnail-size", type=click.IntRange(16, 2048), default=256, show_default=True,
              help="Default thumbnail size in pixels.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level.")
def serve(library_dir: str | None, log_level: str, allow_paths: tuple[str, ...], cors_origins: tuple[str, ...],
          allowed_hosts: tuple[str, ...], decode_workers: int | None, **options: Any) -> None:
    """Serve the HTTP API and the web page (search, inspect, drop an image to tag it).

    Models load once at start and are shared by every request; images from concurrent requests
    are batched together. Binds 127.0.0.1 unless told otherwise; the API docs are at /docs.

    \b
    Example:
        taglens serve
        taglens serve --library ~/photos-lib --port 8080 --max-batch-size 16
        TAGLENS_SERVE_API_KEY=$(openssl rand -hex 24) taglens serve --host 0.0.0.0
    """
    from pydantic import ValidationError

    try:
        import uvicorn

        from taglens.server import Settings, create_app
        from taglens.server.app import choose_checkpoints
    except ImportError as exc:
        raise click.ClickException(f"taglens serve needs the server extra: pip install 'taglens[server]' ({exc})")

    library = _library_folder(library_dir)
    extra: dict[str, Any] = {"decode_workers": decode_workers} if decode_workers else {}
    if allowed_hosts:
        extra["allowed_hosts"] = allowed_hosts
    try:
        settings = Settings(library=library, allow_paths=allow_paths, cors_origins=cors_origins, **extra, **options)
    except ValidationError as exc:
        raise click.UsageError("; ".join(_message(e, _flags()) for e in exc.errors())) from None
    # fail here, with one line, rather than inside uvicorn's startup after every model loaded
    _check_port(settings.host, settings.port)
    current = _library_models(settings.library)
    _check_checkpoints(choose_checkpoints(settings, current))
    url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    click.echo(f"taglens serve: http://{url_host}:{settings.port}/ (API docs at /docs"
               + (f", library {settings.library}" if settings.library else ", no library") + ")", err=True)
    from taglens.server.connections import uvicorn_options

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                **uvicorn_options(settings))


def _library_folder(explicit: str | None) -> Path | None:
    """The explicit folder (which must hold a library), else the default one if it holds a library."""
    from taglens.library import default_library_dir

    if explicit:
        return Path(explicit)
    folder = default_library_dir(None)
    return folder if (folder / "library.db").is_file() else None


def _library_models(folder: Path | None) -> dict[str, str]:
    if folder is None:
        return {}
    from taglens.library import Library

    with Library.open(folder) as lib:
        return lib.current_models()


def _check_checkpoints(chosen: dict[str, str]) -> None:
    from taglens.models.hub import resolve_model

    for model in chosen.values():
        resolve_model(model)  # raises ModelNotFoundError / UnsafeCheckpointError with a clear message


def _check_port(host: str, port: int) -> None:
    """Bind the address as uvicorn will (with SO_REUSEADDR, which only a socket listening there
    blocks), then let it go: a port in use is one line, before any model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(f"cannot serve on {host}:{port}: another program is listening there; "
                                           "stop it or choose another --port") from None
            raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def _flags() -> dict[str, str]:
    """Settings field -> the serve flag that sets it (``max_images_per_request`` -> ``--max-images``)."""
    flags = {p.name: p.opts[0] for p in serve.params if p.name and p.opts}
    flags["library"] = flags.pop("library_dir")
    return flags


def _message(error: dict[str, Any], flags: dict[str, str]) -> str:
    """One validation error in the serve command's words: fields named by their flags."""
    where = ".".join(str(part) for part in error.get("loc", ()))
    text = str(error.get("msg", "")).removeprefix("Value error, ")
    text = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: flags.get(m.group(0), m.group(0)), text)
    return f"{flags.get(where, '--' + where.replace('_', '-'))}: {text}" if where else text

