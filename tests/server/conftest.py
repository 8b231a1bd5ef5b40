"""Fixtures for the HTTP service: the tiny checkpoints, an indexed tiny library, app clients, and a
real uvicorn server on 127.0.0.1 (for the browser test)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from taglens.server import Settings, create_app

BASE_URL = "http://127.0.0.1"


def picture(seed: int, width: int = 96, height: int = 72) -> Image.Image:
    """A smooth random colour field: different seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    grid = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
    return grid.resize((width, height), Image.BICUBIC)


def encoded(seed: int, fmt: str = "JPEG", **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    picture(seed, **kwargs).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def models(checkpoints) -> dict[str, str]:
    """The checkpoint flags every test server runs with."""
    return {"tagger": str(checkpoints["joytag"]), "siglip": str(checkpoints["siglip16"]),
            "nsfw_model": str(checkpoints["vit"])}


@pytest.fixture(scope="session")
def library(tmp_path_factory, models) -> dict[str, Any]:
    """A library of 12 pictures indexed with the same tiny checkpoints (tag, nsfw, embed), with an
    NSFW threshold at the median score so that about half the pictures are flagged."""
    from taglens.library import Library, loaded
    from taglens.models.tag_selection import TagSelection
    from taglens.models.modelset import ModelSet

    root = tmp_path_factory.mktemp("served")
    photos = root / "photos"
    photos.mkdir()
    paths = []
    for i in range(12):
        path = photos / f"img{i:03d}.jpg"
        picture(i).save(path, quality=90)
        paths.append(path)
    models_ = ModelSet(**models, device="cpu")
    detector = models_.load_nsfw()
    threshold = float(np.median([r.nsfw.scores["nsfw"] for r in detector(paths)]))
    with Library.open(root / "lib", create=True) as lib:
        report = lib.index([photos], [
            loaded("tag", models_.load_tagger().job(TagSelection(threshold=0.5))),
            loaded("nsfw", detector.job(threshold=threshold)),
            loaded("embed", models_.load_embedder().job(embedding=True)),
        ])
    assert report.computed == 12
    return {"folder": root / "lib", "photos": photos, "paths": paths, "root": root}


def started(models: dict[str, str], **settings: Any) -> TestClient:
    """A started app (its lifespan run: models loaded) behind a TestClient on 127.0.0.1."""
    client = TestClient(create_app(Settings(**{**models, "device": "cpu", **settings})), base_url=BASE_URL)
    client.__enter__()
    return client


@pytest.fixture
def make_client(models) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a fresh server for a test that changes or counts something."""
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        opened.append(started(models, **settings))
        return opened[-1]

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def client(models, library) -> Iterator[TestClient]:
    """One server over the indexed library, shared by the tests that only read."""
    shared = started(models, library=library["folder"])
    yield shared
    shared.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, settings: Settings):
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def live_server(models, library) -> Iterator[LiveServer]:
    with LiveServer(Settings(**models, device="cpu", library=library["folder"])) as server:
        yield server


def photo_paths(library: dict[str, Any]) -> list[Path]:
    return list(library["paths"])
