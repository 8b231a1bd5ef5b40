"""Concurrent requests really share model batches (the engine's batcher, across requests)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from taglens.server import Settings, create_app

from .conftest import encoded


def test_concurrent_requests_share_model_batches(models):
    """Eight clients send one image each at the same moment: the models see batches of several,
    and every answer equals the one a request alone gets."""
    settings = Settings(**models, device="cpu", max_batch_size=8, max_wait_ms=100)
    app = create_app(settings)
    images = [encoded(i) for i in range(8)]

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                async def one(i, data):
                    files = [("files", (f"{i}.jpg", data, "image/jpeg"))]
                    return await http.post("/v1/analyze", files=files, data={"tasks": "tag,nsfw,embed"})

                together = await asyncio.gather(*(one(i, d) for i, d in enumerate(images)))
                alone = [await one(i, d) for i, d in enumerate(images)]
                metrics = (await http.get("/metrics")).text
        return together, alone, metrics

    together, alone, metrics = asyncio.run(scenario())
    for a, b in zip(together, alone):
        assert a.status_code == b.status_code == 200
        ra, rb = a.json()["results"][0], b.json()["results"][0]
        assert [t["tag"] for t in ra["tags"]] == [t["tag"] for t in rb["tags"]]
        np.testing.assert_allclose(ra["embedding"], rb["embedding"], atol=1e-5)
        assert ra["nsfw"]["scores"] == pytest.approx(rb["nsfw"]["scores"], abs=1e-5)
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("taglens_batch_size_count{"):
            counts[line.split('model="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    # 16 images per model: batched when together (fewer batches than images), alone one each
    for model in ("tag", "nsfw", "embed"):
        assert counts[model] < 16, counts
