"""Scoring a query against the vector index: text, image and combined queries, and filters.

A query is a list of parts, each a unit vector with a weight (negative for ``--minus``). Each
part scores an image on its own scale:

- a **text** part on SigLIP: the calibrated probability ``sigmoid(logit_scale * cos + logit_bias)``
  (what zero-shot classification reports for that text), so ``--min-score 0.5`` means "more likely
  than not"; on CLIP (no bias) the cosine;
- an **image** part: the cosine between the two image embeddings (1 for the same image).

The score of the whole query is ``sum(w_i * s_i) / sum(positive w_i)``: a single part keeps its own
scale, and a minus part pulls down what resembles it. Exact indexes score every (allowed) vector;
an HNSW index gathers candidates near each positive part and rescores them exactly, widening the
search until enough pass the filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from taglens.library.vectors import EXACT_LIMIT, VectorIndex, top_k

_WEIGHT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)):(.*)$", re.S)


@dataclass(frozen=True)
class Part:
    """One query part: a unit vector, its weight, and whether it is text (calibrated) or an image."""

    vector: np.ndarray
    weight: float
    text: bool


@dataclass(frozen=True)
class Calibration:
    """SigLIP's text-image calibration: probability = sigmoid(scale * cos + bias)."""

    scale: float
    bias: float

    def __call__(self, cos: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.scale * cos + self.bias)))


def split_weight(value: str) -> tuple[float, str]:
    """``"2:beach"`` -> ``(2.0, "beach")``; text without a numeric prefix has weight 1."""
    match = _WEIGHT.match(value)
    if match and match.group(2):
        return float(match.group(1)), match.group(2)
    return 1.0, value


def combine(parts: list[Part], cosines: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """Scores (n,) from per-part cosines (n, P)."""
    total = np.zeros(cosines.shape[0], np.float64)
    for i, part in enumerate(parts):
        column = cosines[:, i].astype(np.float64)
        score = calibration(column) if part.text and calibration is not None else column
        total += part.weight * score
    positive = sum(p.weight for p in parts if p.weight > 0)
    return total / positive


def rank(
    index: VectorIndex,
    parts: list[Part],
    calibration: Calibration | None,
    *,
    limit: int,
    allowed: np.ndarray | None = None,
    min_score: float | None = None,
    exact_limit: int = EXACT_LIMIT,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``limit`` contents for the query: (content ids, scores), best first.

    ``allowed`` (sorted content ids) restricts the search to images that passed the filters.
    """
    if not parts or not any(p.weight > 0 for p in parts):
        raise ValueError("a query needs at least one part with a positive weight")
    queries = np.stack([p.vector for p in parts]).astype(np.float32)
    if allowed is not None:
        allowed = np.intersect1d(allowed, index.keys, assume_unique=True)
    if index.kind == "exact" or (allowed is not None and len(allowed) <= exact_limit):
        keys, cosines = index.cosines(queries, allowed if allowed is not None else None)
        return _best(keys, combine(parts, cosines, calibration), limit, min_score)
    return _rank_approximate(index, parts, queries, calibration, limit, allowed, min_score)


def _rank_approximate(index: VectorIndex, parts: list[Part], queries: np.ndarray, calibration: Calibration | None,
                      limit: int, allowed: np.ndarray | None, min_score: float | None) -> tuple[np.ndarray, np.ndarray]:
    positive = [i for i, p in enumerate(parts) if p.weight > 0]
    direction = sum(parts[i].weight * parts[i].vector for i in range(len(parts)))
    norm = float(np.linalg.norm(direction))
    probes = queries[positive]
    if norm > 1e-6 and len(parts) > 1:
        probes = np.vstack([probes, direction / norm])
    want = max(limit, 1)
    k = min(len(index), max(4 * want, 100))
    while True:
        found, _ = index.search(probes, k)
        candidates = np.unique(found[found >= 0])
        if allowed is not None:
            candidates = candidates[np.isin(candidates, allowed, assume_unique=True)]
        keys, cosines = index.cosines(queries, candidates)
        best_keys, best_scores = _best(keys, combine(parts, cosines, calibration), limit, min_score)
        if len(best_keys) >= want or k >= len(index):
            return best_keys, best_scores
        k = min(len(index), k * 4)


def _best(keys: np.ndarray, scores: np.ndarray, limit: int, min_score: float | None) -> tuple[np.ndarray, np.ndarray]:
    if min_score is not None:
        keep = scores >= min_score
        keys, scores = keys[keep], scores[keep]
    best_keys, best_scores = top_k(np.asarray(keys), scores[None, :], limit)
    return best_keys[0], best_scores[0]
