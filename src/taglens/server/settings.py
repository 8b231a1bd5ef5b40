"""Everything `taglens serve` can be told, in one pydantic Settings object validated at start.

Each field is also read from the environment as ``TAGLENS_SERVE_<NAME>`` (e.g.
``TAGLENS_SERVE_API_KEY``), so a key need not appear on a command line. A combination that would
be unsafe (another host without an API key) or cannot work (a request allowed more images than
the queue holds) is refused here, before any model is loaded.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taglens.io.decode import DEFAULT_MAX_PIXELS

MiB = 1024 * 1024
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of this machine's loopback interface."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """The service's configuration; see docs/server.md for each field's meaning."""

    model_config = SettingsConfigDict(env_prefix="TAGLENS_SERVE_", extra="forbid", frozen=True)

    # where and who
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    insecure_no_auth: bool = False
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None
    """Host header values accepted (DNS-rebinding guard); default: loopback names on a loopback
    bind, any host otherwise (the API key guards that case)."""

    # what
    library: Path | None = None
    tagger: str | None = None
    siglip: str | None = None
    nsfw_model: str | None = None
    """Checkpoints (hub id or folder); None: the one the library was indexed with, else the default."""
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16", "int8"] = "float32"
    tf32: bool = False
    """Let float32 CUDA matmuls and cuDNN convolutions use TF32 (opt-in; docs/models.md)."""
    allow_paths: tuple[Path, ...] = ()
    """Folders whose files a JSON request may name by path; none by default."""

    # batching and limits
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_wait_ms: float = Field(5.0, ge=0, le=10_000)
    queue_size: int = Field(128, ge=1)
    """Images admitted at once (decoding, waiting or in a model); more gets 503 + Retry-After."""
    decode_workers: int | None = Field(None, ge=1, le=256)
    """Decode threads; None: sized with torch's threads (`taglens.engine.threads`)."""
    request_timeout_s: float = Field(60.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    header_timeout_s: float = Field(10.0, gt=0)  # taglens.server.connections
    max_connections_per_client: int = Field(64, ge=1)
    max_request_bytes: int = Field(64 * MiB, ge=1024)
    max_image_bytes: int = Field(32 * MiB, ge=1)
    max_images_per_request: int = Field(64, ge=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    draft: bool = False
    """JPEG draft decoding (opt-in: it moves the scores; docs/decoding.md)."""
    thumbnail_size: int = Field(256, ge=16, le=2048)

    @field_validator("allow_paths")
    @classmethod
    def _existing_folders(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        resolved = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"allowed path {root} is not an existing folder")
            resolved.append(path)
        return tuple(resolved)

    @field_validator("library")
    @classmethod
    def _existing_library(cls, folder: Path | None) -> Path | None:
        if folder is None:
            return None
        folder = Path(folder).expanduser().resolve()
        if not (folder / "library.db").is_file():
            raise ValueError(f"no library at {folder} (no library.db); run `taglens index PATH --library {folder}` first")
        return folder

    @model_validator(mode="after")
    def _safe_and_consistent(self) -> Settings:
        if not is_loopback(self.host) and self.api_key is None and not self.insecure_no_auth:
            raise ValueError(
                f"binding to {self.host} exposes the service beyond this machine: give an --api-key "
                "(or, if you really mean it, --insecure-no-auth)"
            )
        if self.api_key is not None and len(self.api_key.get_secret_value()) < 16:
            raise ValueError("the API key must be at least 16 characters long")
        if self.max_images_per_request > self.queue_size:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) cannot exceed queue_size ({self.queue_size}): "
                "such a request could never be admitted"
            )
        if self.max_image_bytes > self.max_request_bytes:
            raise ValueError("max_image_bytes cannot exceed max_request_bytes")
        return self

    @property
    def auth_required(self) -> bool:
        return self.api_key is not None

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host header values accepted (``("*",)``: any)."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        if is_loopback(self.host):  # the names of this machine, and the address bound (127.0.0.2 too)
            return tuple(dict.fromkeys(("127.0.0.1", "localhost", "::1", "[::1]", self.host.strip("[]").lower())))
        return ("*",)
