"""Prometheus metrics of one app (its own registry, so several apps in one process stay apart).

Requests (count and latency by route template and status), images (ok / partial / error), refusals (queue
full, timeouts, size limits), model batches (size and seconds by model) and the queue: images
admitted and items waiting for a batch. Served as text at ``GET /metrics``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("taglens_http_requests", "HTTP requests by route, method and status.",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("taglens_http_request_seconds", "Time from request to response, by route.",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("taglens_images", "Images processed, by outcome (ok, partial, error).", ("outcome",), registry=r)
        self.rejected = Counter("taglens_rejected", "Requests refused, by reason (queue_full, timeout, "
                                "too_large, unsupported_type).", ("reason",), registry=r)
        self.batch_size = Histogram("taglens_batch_size", "Images per model batch, by model.", ("model",),
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("taglens_batch_seconds", "Seconds per model batch, by model.", ("model",),
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("taglens_queue_depth", "Images admitted and not yet answered.", registry=r)
        self.batcher_pending = Gauge("taglens_batcher_pending", "Images waiting for a model batch.", registry=r)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.batch_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by its route template (never the raw path: bounded label values)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(name, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)
