"""Deterministic stand-ins for the model families, with exactly their Job/Embedder shapes.

The embedding is the image's own pixels, downsampled, centred and L2-normalised: a resized or
recompressed copy lands close to its original, a different picture far away. Tags and NSFW
scores are simple functions of the pixels, so tests can compute what to expect on their own.
Every job counts the images it saw (``calls``), and may sleep per batch (for the kill test).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from taglens.records import NsfwResult, TagScore


@dataclass(frozen=True)
class Pixels:
    """Transform: resize to size x size (bilinear), CHW float32 in [0, 1]."""

    input_size: int = 16

    def __call__(self, image):
        from PIL import Image

        small = image.resize((self.input_size, self.input_size), Image.BILINEAR)
        return np.asarray(small, np.float32).transpose(2, 0, 1) / 255.0


def embed_pixels(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) -> a unit float32 vector: the centred pixels."""
    v = pixels.reshape(-1).astype(np.float64)
    v = v - v.mean()
    return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


def tags_for(pixels: np.ndarray) -> tuple[TagScore, ...]:
    r, g, b = (float(pixels[c].mean()) for c in range(3))
    scores = {"reddish": r, "greenish": g, "blueish": b, "bright": float(pixels.mean())}
    return tuple(sorted((TagScore(k, v) for k, v in scores.items() if v > 0.5), key=lambda t: -t.score))


def nsfw_for(pixels: np.ndarray) -> NsfwResult:
    p = float(pixels[0].mean())  # "redness" stands in for the classifier's nsfw probability
    scores = {"normal": 1.0 - p, "nsfw": p}
    label = "nsfw" if p > 0.5 else "normal"
    return NsfwResult(label, max(p, 1 - p), scores, p > 0.5)


class FakeJob:
    """A Job (name, transform, model_id, revision, __call__) for one task."""

    def __init__(self, task: str, model_id: str = "fake/model", revision: str = "r1", *, delay: float = 0.0,
                 log: str | None = None):
        self.name = task
        self.task = task
        self.transform = Pixels()
        self.model_id = f"{model_id}-{task}"
        self.revision = revision
        self.delay = delay
        self.log = log
        self.calls = 0

    def __call__(self, pixels: np.ndarray) -> list[dict]:
        if self.delay:
            time.sleep(self.delay)
        self.calls += len(pixels)
        if self.log:
            with open(self.log, "a") as f:
                for p in pixels:
                    f.write(f"{self.task} {hashlib.sha256(p.tobytes()).hexdigest()[:16]}\n")
                f.flush()
        if self.task == "tag":
            return [{"tags": tags_for(p)} for p in pixels]
        if self.task == "nsfw":
            return [{"nsfw": nsfw_for(p)} for p in pixels]
        return [{"embedding": embed_pixels(p)} for p in pixels]


def text_vector(text: str, dim: int = 768) -> np.ndarray:
    """A deterministic unit vector per text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


class FakeEmbedder:
    """`taglens.models.siglip.Embedder`'s shape: text and image towers, SigLIP calibration constants."""

    kind = "siglip"
    logit_scale = 10.0
    logit_bias = -1.0

    def __init__(self, model_id: str = "fake/model-embed", revision: str = "r1"):
        self.model_id, self.revision = model_id, revision
        self.text_calls = 0
        self.jobs = []

    def embed_texts(self, texts):
        self.text_calls += len(texts)
        return np.stack([text_vector(t) for t in texts])

    def embed_images(self, images):
        return np.stack([embed_pixels(Pixels()(im.convert("RGB"))) for im in images])

    def job(self, labels=None, *, embedding: bool = True) -> FakeJob:
        job = FakeJob("embed", self.model_id.removesuffix("-embed"), self.revision)
        self.jobs.append(job)
        return job


def fake_models(model_id: str = "fake/model", revision: str = "r1", *, tasks=("tag", "nsfw", "embed"),
                delay: float = 0.0, log: str | None = None):
    """Model sources for Library.index, and the jobs behind them (to count calls)."""
    from taglens.library import loaded

    jobs = {t: FakeJob(t, model_id, revision, delay=delay, log=log) for t in tasks}
    return [loaded(t, j) for t, j in jobs.items()], jobs
