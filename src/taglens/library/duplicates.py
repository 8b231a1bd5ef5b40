"""Near-duplicate groups: images whose embeddings are at least ``threshold`` apart in cosine.

Every pair above the threshold is an edge; groups are the connected components (union-find),
so a chain of small edits ends in one group. Exact indexes compare all pairs in blocks of matrix
products; HNSW indexes look at each image's nearest ``neighbours``. Byte-identical files (one
content, several paths) always form a group with similarity 1.

`DEFAULT_THRESHOLD`: see benchmarks/duplicate_threshold.py, which measures the cosines of
resized and recompressed copies of generated images against those of different images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taglens.library import db
from taglens.library.reports import DuplicateGroup
from taglens.library.vectors import VectorIndex

if TYPE_CHECKING:
    from taglens.library import Library

# Provisional until benchmarks/duplicate_threshold.py is run with the default SigLIP checkpoint
# (which this build could not reach). Random-weight checkpoints (tiny, and full-size so400m) were
# measured and cannot set it: they put unrelated pictures at cosine 0.82-0.91; see docs/library.md.
DEFAULT_THRESHOLD = 0.95
NEIGHBOURS = 16


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    cosine: float


def similar_pairs(index: VectorIndex, threshold: float, *, block: int = 512,
                  neighbours: int = NEIGHBOURS) -> list[Edge]:
    """Every pair of contents (a < b) whose cosine is >= threshold (exact index: all of them)."""
    keys = np.asarray(index.keys)
    edges: list[Edge] = []
    if index.kind == "exact":
        matrix = np.asarray(index.matrix, dtype=np.float32)  # type: ignore[attr-defined]
        for start in range(0, len(keys), block):
            scores = matrix[start:start + block] @ matrix[start:].T  # only pairs (i, j >= i)
            rows, cols = np.nonzero(scores >= threshold)
            cols = cols + start
            rows = rows + start
            keep = cols > rows
            for i, j in zip(rows[keep], cols[keep]):
                edges.append(Edge(int(keys[i]), int(keys[j]), float(scores[i - start, j - start])))
        return edges
    for start in range(0, len(keys), block):
        chunk = keys[start:start + block]
        found, cos = index.search(index.vectors(chunk), min(neighbours + 1, len(keys)))
        for a, row_keys, row_cos in zip(chunk, found, cos):
            for b, c in zip(row_keys, row_cos):
                if b >= 0 and b != a and c >= threshold:
                    edges.append(Edge(int(min(a, b)), int(max(a, b)), float(c)))
    return list({(e.a, e.b): e for e in edges}.values())


def groups(edges: list[Edge]) -> list[tuple[list[int], float]]:
    """Connected components of the edges: (sorted content ids, lowest edge cosine inside)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for edge in edges:
        ra, rb = find(edge.a), find(edge.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    lowest: dict[int, float] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    for edge in edges:
        root = find(edge.a)
        lowest[root] = min(lowest.get(root, 1.0), edge.cosine)
    return [(sorted(m), lowest[root]) for root, m in members.items()]


def find(lib: Library, threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """`taglens.library.Library.duplicates`: groups of files, largest first."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold is a cosine, between -1 and 1")
    content_groups = groups(similar_pairs(lib.vector_index(), threshold))
    paths_of: dict[int, list[str]] = {}
    for row in db.files_listing(lib.conn):
        paths_of.setdefault(row["content"], []).append(row["path"])
    grouped = set()
    result = []
    for members, similarity in content_groups:
        grouped.update(members)
        paths = tuple(sorted(p for c in members for p in paths_of.get(c, [])))
        if len(paths) > 1:
            result.append(DuplicateGroup(paths, similarity))
    for content, paths in paths_of.items():  # byte-identical copies
        if content not in grouped and len(paths) > 1:
            result.append(DuplicateGroup(tuple(paths), 1.0))
    result.sort(key=lambda g: (-len(g.paths), -g.similarity, g.paths))
    return result
