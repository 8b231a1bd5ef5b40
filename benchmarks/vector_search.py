"""Vector search over random unit vectors: exact scans vs HNSW (usearch) vs faiss, one table.

    python benchmarks/vector_search.py                       # the full run: 1,000,000 x 1152
    python benchmarks/vector_search.py --n 100000 --hnsw-n 50000 --compare-n 50000   # minutes

Prints, for each method: top-20 p50/p95 latency of single queries, recall@20 against an exact
float32 search, build time and memory. ``ExactIndex`` is what taglens uses up to
``taglens.library.vectors.EXACT_LIMIT`` vectors (a float32 matrix, one BLAS product per query);
HNSW above it (usearch, float16 storage, the library's connectivity and expansion settings).

Random unit vectors in 1152 dimensions are the worst case for any graph or cluster index: a
random query's 20 nearest neighbours have cosines of about 0.13 against a bulk spread of 0.03,
with no structure to follow, so recall at a given expansion here is a lower bound for real
embeddings, which lie near a low-dimensional surface.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


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


def latencies(fn, queries: np.ndarray) -> tuple[float, float]:
    fn(queries[0])  # warm
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the library")
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--exact-sizes", default="10000,25000,50000,100000,200000",
                    help="sizes at which to time the float32 exact scan (ExactIndex)")
    ap.add_argument("--hnsw-n", type=int, default=200_000,
                    help="vectors in the HNSW graph (building 1M takes well over 15 min on 2 cores)")
    ap.add_argument("--ef", default="64,256,1024,4096", help="HNSW expansion_search values")
    ap.add_argument("--compare-n", type=int, default=50_000, help="size of the usearch vs faiss comparison (0: skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--clusters", type=int, default=0,
                    help="0: pure random vectors (the goal's data); N: N random cluster centres plus noise, "
                         "a crude stand-in for real embeddings, which have structure")
    args = ap.parse_args()

    from usearch.index import Index, search as usearch_search

    from taglens.library import vectors

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    centres = unit_rows(rng, args.clusters, args.dim, np.float32) if args.clusters else None
    data = unit_rows(rng, args.n, args.dim, centres=centres)
    queries = unit_rows(rng, args.queries, args.dim, np.float32, centres=centres)
    kind = f"clustered ({args.clusters} centres)" if args.clusters else "random"
    print(f"# {args.n} x {args.dim} {kind} unit vectors (float16), {args.queries} {kind} unit queries, "
          f"top-{args.k}, {os.cpu_count()} CPUs; generated in {time.perf_counter() - t:.1f} s", flush=True)
    rows = []

    # exact float32 scan, as the library's ExactIndex does it
    for size in [int(s) for s in args.exact_sizes.split(",") if s and int(s) <= args.n]:
        matrix = data[:size].astype(np.float32)
        index = vectors.ExactIndex(np.arange(size, dtype=np.int64), matrix)
        p50, p95 = latencies(lambda q: index.search(q, args.k), queries)
        rows.append(("exact float32 (ExactIndex)", size, p50, p95, 1.0, 0.0, matrix.nbytes / 1e6))
        print(rows[-1], flush=True)
        del matrix, index

    # exact float16 scan of everything (usearch SIMD brute force, all threads)
    truth = exact_truth(data, queries, args.k)
    p50, p95 = latencies(lambda q: usearch_search(data, q, args.k, "cos", exact=True, threads=args.threads), queries)
    found = usearch_search(data, queries, args.k, "cos", exact=True, threads=args.threads).keys
    rows.append(("exact float16 (usearch brute force)", args.n, p50, p95, recall(found, truth), 0.0, data.nbytes / 1e6))
    print(rows[-1], flush=True)

    # HNSW with the library's settings
    hn = args.hnsw_n or args.n
    htruth = truth if hn == args.n else exact_truth(data[:hn], queries, args.k)
    before = rss_mb()
    index = Index(ndim=args.dim, metric="cos", dtype="f16", connectivity=vectors.HNSW_CONNECTIVITY,
                  expansion_add=vectors.HNSW_EXPANSION_ADD)
    t = time.perf_counter()
    for s in range(0, hn, 100_000):
        index.add(np.arange(s, min(hn, s + 100_000), dtype=np.uint64), data[s:min(hn, s + 100_000)],
                  threads=args.threads)
        print(f"  hnsw: {min(hn, s + 100_000)} added, {time.perf_counter() - t:.0f} s", flush=True)
    build = time.perf_counter() - t
    memory = max(index.memory_usage / 1e6, rss_mb() - before)
    for ef in [int(e) for e in args.ef.split(",")]:
        index.expansion_search = ef
        found = index.search(queries, args.k, threads=args.threads).keys
        p50, p95 = latencies(lambda q: index.search(q, args.k), queries)
        rows.append((f"usearch HNSW f16 M=16 ef={ef}", hn, p50, p95, recall(found, htruth), build, memory))
        print(rows[-1], flush=True)
    del index

    if args.compare_n:
        import faiss

        m = args.compare_n
        sub = data[:m].astype(np.float32)
        ctruth = exact_truth(data[:m], queries, args.k)
        faiss.omp_set_num_threads(args.threads)
        for name, make in [("faiss HNSWFlat f32 M=16", lambda: faiss.IndexHNSWFlat(args.dim, 16, faiss.METRIC_INNER_PRODUCT)),
                           ("usearch HNSW f16 M=16", None)]:
            t = time.perf_counter()
            if make is None:
                idx = Index(ndim=args.dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128)
                idx.add(np.arange(m, dtype=np.uint64), data[:m], threads=args.threads)
            else:
                idx = make()
                idx.hnsw.efConstruction = 128
                idx.add(sub)
            build = time.perf_counter() - t
            for ef in (256, 1024):
                if make is None:
                    idx.expansion_search = ef
                    found = idx.search(queries, args.k).keys
                    p50, p95 = latencies(lambda q: idx.search(q, args.k), queries)
                else:
                    idx.hnsw.efSearch = ef
                    found = idx.search(queries, args.k)[1]
                    p50, p95 = latencies(lambda q: idx.search(q[None], args.k), queries)
                rows.append((f"{name} ef={ef}", m, p50, p95, recall(found, ctruth), build, float("nan")))
                print(rows[-1], flush=True)
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(sub)
        p50, p95 = latencies(lambda q: flat.search(q[None], args.k), queries)
        rows.append(("faiss IndexFlatIP f32 (exact)", m, p50, p95, 1.0, time.perf_counter() - t, sub.nbytes / 1e6))

    print()
    print(f"| method | vectors | p50 ms | p95 ms | recall@{args.k} | build s | memory MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, p50, p95, rec, build, mem in rows:
        print(f"| {name} | {size:,} | {p50:.1f} | {p95:.1f} | {rec:.3f} | {build:.1f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
