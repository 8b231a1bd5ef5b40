"""Vector search over random unit vectors: exact scans, quantised scans with exact rerank, HNSW, IVF.

    python benchmarks/vector_search.py                       # the goal's data: 1,000,000 x 1152 (~12 min)
    python benchmarks/vector_search.py --n 100000 --hnsw-n 10000          # a few minutes
    python benchmarks/vector_search.py --n 200000 --clusters 1000         # structured, like real embeddings
    python benchmarks/vector_search.py --methods rabitq2                  # 2-bit RaBitQ (a 4-minute build)
    python benchmarks/vector_search.py --methods hnsw --hnsw-m 16,32,64   # the connectivity sweep

Prints, for each method: top-20 p50/p95 latency of single queries (each query alone, as
``taglens search`` runs), recall@20 against an exact float32 search, build time and memory.

Methods (``--methods``, comma-separated; default: all but rabitq2):

- ``exact``: the library's `ExactIndex` (a float32 matrix, one BLAS product per query) at
  ``--exact-sizes``: what taglens uses up to `taglens.library.vectors.EXACT_LIMIT` vectors;
- ``brute``: float16 SIMD brute force over all ``--n`` (usearch ``exact=True``), ``--brute-queries``
  queries (it is slow);
- ``rabitq`` / ``rabitq2``: faiss RaBitQ (1 or 2 bits per dimension, fast-scan, queries quantised
  to 8 bits) over all ``--n``, its best ``C`` candidates rescored exactly in float32, for each C in
  ``--candidates``: the best recall per millisecond measured on random vectors;
- ``binary``: sign bits compared by Hamming distance (faiss IndexBinaryFlat), then exact rerank;
- ``hnsw``: usearch HNSW graphs on the first ``--hnsw-n`` vectors, for each connectivity M in
  ``--hnsw-m`` (float16 storage, expansion_add 128) and each ``--ef``;
- ``ivf``: faiss IVF-Flat (``--ivf-lists`` lists) on ``--hnsw-n`` vectors, for each ``--nprobe``.

Random unit vectors in 1152 dimensions are the worst case for any graph or cluster index: a
random query's 20 nearest neighbours have cosines of about 0.13 against a bulk spread of 0.03,
with no structure to follow, so graphs and clusterings must visit most of the data; only a scan of
compressed codes followed by an exact rerank keeps recall high. Real image embeddings lie near a
low-dimensional surface (``--clusters N`` is a crude stand-in), where HNSW finds the neighbours
in well under a millisecond.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

METHODS = ("exact", "brute", "rabitq", "rabitq2", "binary", "hnsw", "ivf")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_rows(rng: np.random.Generator, n: int, dim: int, dtype=np.float16, chunk: int = 50_000,
              centres: np.ndarray | None = None) -> np.ndarray:
    """Random unit rows; with ``centres``, each row is a random centre plus isotropic noise of the
    same norm (cosine about 0.7 to its centre, 0.5 to its cluster-mates, 0 to other clusters)."""
    out = np.empty((n, dim), dtype)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        if centres is not None:
            x = x / np.sqrt(dim) + centres[rng.integers(0, len(centres), len(x))]
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_truth(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 50_000) -> np.ndarray:
    """Exact top-k ids per query in float32 (over the float16-stored vectors)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for s in range(0, len(data), chunk):
        scores = queries @ data[s:s + chunk].astype(np.float32).T
        ids = np.broadcast_to(np.arange(s, s + scores.shape[1]), scores.shape)
        all_s, all_i = np.hstack([best_s, scores]), np.hstack([best_i, ids])
        top = np.argsort(-all_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def timed(fn, queries: np.ndarray) -> tuple[float, float, list]:
    """p50 and p95 in ms over the queries, one at a time, and each query's result."""
    fn(queries[0])  # warm
    times, results = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000), results


def recall(found, truth: np.ndarray) -> float:
    return float(np.mean([len(set(np.asarray(f).tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


class Reranker:
    """Exact float32 rescoring of candidate ids, as the library rescores an approximate index's
    candidates (float32 rows: numpy's float16 -> float32 conversion would dominate the time)."""

    def __init__(self, data: np.ndarray, k: int):
        self.matrix = np.empty(data.shape, np.float32)
        for s in range(0, len(data), 100_000):
            self.matrix[s:s + 100_000] = data[s:s + 100_000]
        self.k = k

    def __call__(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        ids = np.sort(ids[ids >= 0])
        scores = self.matrix[ids] @ q
        top = np.argpartition(-scores, self.k - 1)[:self.k] if len(ids) > self.k else np.arange(len(ids))
        return ids[top[np.argsort(-scores[top])]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the library")
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--methods", default=",".join(m for m in METHODS if m != "rabitq2"))
    ap.add_argument("--exact-sizes", default="10000,25000,50000,100000",
                    help="sizes at which to time the float32 exact scan (ExactIndex)")
    ap.add_argument("--brute-queries", type=int, default=20)
    ap.add_argument("--candidates", default="1000,3000,10000,20000", help="rabitq/binary: candidates reranked")
    ap.add_argument("--hnsw-n", type=int, default=20_000,
                    help="vectors in the HNSW graphs and IVF (a 1,000,000-vector graph takes well over 30 min "
                         "to build on 2 cores)")
    ap.add_argument("--hnsw-m", default="32", help="HNSW connectivity values (the library uses 32; try 16,32,64)")
    ap.add_argument("--ef", default="256,1024,4096", help="HNSW expansion_search values")
    ap.add_argument("--ivf-lists", type=int, default=256)
    ap.add_argument("--nprobe", default="16,64")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--clusters", type=int, default=0,
                    help="0: pure random vectors (the goal's data); N: N random cluster centres plus noise, "
                         "a crude stand-in for real embeddings, which have structure")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")

    from taglens.library import vectors

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    centres = unit_rows(rng, args.clusters, args.dim, np.float32) if args.clusters else None
    data = unit_rows(rng, args.n, args.dim, centres=centres)
    queries = unit_rows(rng, args.queries, args.dim, np.float32, centres=centres)
    kind = f"clustered ({args.clusters} centres)" if args.clusters else "random"
    print(f"# {args.n} x {args.dim} {kind} unit vectors (float16), {args.queries} {kind} unit queries, "
          f"top-{args.k}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"generated in {time.perf_counter() - t:.1f} s", flush=True)
    truth = exact_truth(data, queries, args.k)
    rows: list[tuple] = []

    def row(*values) -> None:
        rows.append(values)
        name, size, p50, p95, rec, build, mem = values
        print(f"  {name} | {size:,} | p50 {p50:.1f} ms | p95 {p95:.1f} ms | recall {rec:.3f} | build {build:.1f} s | "
              f"{mem:.0f} MB", flush=True)

    if "exact" in methods:
        for size in [int(s) for s in args.exact_sizes.split(",") if s and int(s) <= args.n]:
            matrix = data[:size].astype(np.float32)
            index = vectors.ExactIndex(np.arange(size, dtype=np.int64), matrix)
            sub_truth = truth if size == args.n else exact_truth(data[:size], queries, args.k)
            p50, p95, found = timed(lambda q, index=index: index.search(q, args.k)[0][0], queries)
            row("exact float32 scan (ExactIndex)", size, p50, p95, recall(found, sub_truth), 0.0, matrix.nbytes / 1e6)
            del matrix, index

    needs_rerank = {"rabitq", "rabitq2", "binary"} & set(methods)
    rerank = Reranker(data, args.k) if needs_rerank else None
    candidates = [int(c) for c in args.candidates.split(",") if c]
    for method in ("rabitq", "rabitq2"):
        if method not in methods:
            continue
        import faiss

        faiss.omp_set_num_threads(args.threads)
        before, t = rss_mb(), time.perf_counter()
        index = faiss.index_factory(args.dim, "RaBitQfs" if method == "rabitq" else "RaBitQfs2", faiss.METRIC_INNER_PRODUCT)
        index.train(data[:50_000].astype(np.float32))
        for s in range(0, args.n, 100_000):
            index.add(data[s:s + 100_000].astype(np.float32))
        build, memory = time.perf_counter() - t, rss_mb() - before
        index.qb = 8
        faiss.omp_set_num_threads(1)  # one query at a time: OpenMP only adds barriers, costly under load
        bits = 1 if method == "rabitq" else 2
        for c in candidates if method == "rabitq" else [c // 10 for c in candidates]:
            p50, p95, found = timed(lambda q, index=index, c=c: rerank(q, index.search(q[None], c)[1][0]), queries)
            row(f"faiss RaBitQ {bits}-bit fast scan + exact rerank of {c:,}", args.n, p50, p95, recall(found, truth),
                build, memory)
        del index

    if "binary" in methods:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        before, t = rss_mb(), time.perf_counter()
        index = faiss.IndexBinaryFlat(args.dim)
        for s in range(0, args.n, 100_000):
            index.add(np.packbits(data[s:s + 100_000] > 0, axis=1))
        build, memory = time.perf_counter() - t, rss_mb() - before
        faiss.omp_set_num_threads(1)
        for c in candidates[-2:]:
            p50, p95, found = timed(lambda q, c=c: rerank(q, index.search(np.packbits(q[None] > 0, axis=1), c)[1][0]),
                                    queries)
            row(f"faiss binary (Hamming) + exact rerank of {c:,}", args.n, p50, p95, recall(found, truth), build, memory)
        del index
    rerank = None  # free the float32 copy before HNSW

    hn = min(args.hnsw_n or args.n, args.n)
    htruth = truth if hn == args.n else exact_truth(data[:hn], queries, args.k)
    if "ivf" in methods:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        sub = data[:hn].astype(np.float32)
        t = time.perf_counter()
        quantizer = faiss.IndexFlatIP(args.dim)
        index = faiss.IndexIVFFlat(quantizer, args.dim, args.ivf_lists, faiss.METRIC_INNER_PRODUCT)
        index.train(sub[:min(hn, 40 * args.ivf_lists)])
        index.add(sub)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        for nprobe in [int(x) for x in args.nprobe.split(",") if x]:
            index.nprobe = nprobe
            p50, p95, found = timed(lambda q: index.search(q[None], args.k)[1][0], queries)
            row(f"faiss IVF-Flat {args.ivf_lists} lists, nprobe {nprobe}", hn, p50, p95, recall(found, htruth), build,
                sub.nbytes / 1e6)
        del index, sub

    # usearch after faiss: the other order crashes (their OpenMP runtimes clash in one process)
    if "brute" in methods:
        from usearch.index import search as usearch_search

        few = queries[:args.brute_queries]
        p50, p95, found = timed(lambda q: usearch_search(data, q, args.k, "cos", exact=True, threads=args.threads).keys,
                                few)
        row("exact float16 SIMD brute force (usearch)", args.n, p50, p95, recall(found, truth[:len(few)]), 0.0,
            data.nbytes / 1e6)

    if "hnsw" in methods:
        from usearch.index import Index

        for m in [int(x) for x in args.hnsw_m.split(",") if x]:
            index = Index(ndim=args.dim, metric="cos", dtype="f16", connectivity=m,
                          expansion_add=vectors.HNSW_EXPANSION_ADD)
            t = time.perf_counter()
            for s in range(0, hn, 100_000):
                index.add(np.arange(s, min(hn, s + 100_000), dtype=np.uint64), data[s:min(hn, s + 100_000)],
                          threads=args.threads)
            build = time.perf_counter() - t
            for ef in [int(e) for e in args.ef.split(",")]:
                index.expansion_search = ef
                p50, p95, found = timed(lambda q, index=index: index.search(q, args.k).keys, queries)
                row(f"usearch HNSW f16 M={m} ef={ef}", hn, p50, p95, recall(found, htruth), build,
                    index.memory_usage / 1e6)
            del index

    print()
    print(f"| method | vectors | p50 ms | p95 ms | recall@{args.k} | build s | memory MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, p50, p95, rec, build, mem in rows:
        print(f"| {name} | {size:,} | {p50:.1f} | {p95:.1f} | {rec:.3f} | {build:.1f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
