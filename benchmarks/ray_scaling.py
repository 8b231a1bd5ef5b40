"""How the Ray engine's throughput scales with the number of CPU model actors (1, 2, ...).

The model is the full-size ViT-B/16 224 classifier of ``Falconsai/nsfw_image_detection``'s shape
with **random weights** (`common.checkpoint("nsfw")`, cached in TAGLENS_BENCH_DIR; ``--preset
tiny`` for the test suite's tiny one, which measures Ray's own overhead), so no network is needed
and the scores mean nothing: this measures speed only. Inputs are photo-like 640x480 JPEG files
on disk (`common.make_photos`).

For each actor count, one local Ray instance (``--cpus`` logical CPUs, default actors + 1, so the
decode tasks always have a CPU) runs the Ray Data pipeline of ``taglens analyze --engine ray``
(`taglens.distributed.build_dataset`) over a few images (warm-up: Ray's worker processes start
and import torch), then N, then 2N images. Two figures per setting:

- steady images/s: N / (time for 2N - time for N), so the fixed costs (actor start, model
  loading in each actor, the first batch through the pipeline) cancel out;
- total s: each whole run, those fixed costs included (Ray's own start excluded).

The local engine (`taglens.engine.run`, torch's default threads) on the same N images is the
baseline, measured before and after the Ray rows. Each Ray actor gets one CPU, so torch runs one
thread in it. The load average is printed: on a shared machine, read the rows with it.

    python benchmarks/ray_scaling.py                           # ViT-B/16, 48 and 96 images, 1 and 2 actors
    python benchmarks/ray_scaling.py --preset tiny --images 400
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import checkpoint, make_photos

from taglens import distributed, engine
from taglens.engine import EngineOptions
from taglens.io.locations import list_locations
from taglens.models.modelset import ModelSet, TaskRequest
from taglens.testing import write_vit_classifier


def run_ray(folders: list[Path], models: ModelSet, request: TaskRequest, options: EngineOptions, actors: int,
            cpus: int, files_per_task: int) -> list[tuple[float, int]]:
    """(seconds, rows) of one pipeline run per folder, for one actor count, on one fresh local
    Ray (its start is not timed; each run starts its own actors and loads the model in them)."""
    import ray

    ray.init(**distributed.ray_init_arguments(num_cpus=cpus))
    results = []
    try:
        ray_options = distributed.RayOptions(concurrency=actors, files_per_task=files_per_task, quiet=True)
        plan = distributed.plan_for(models, request, options)
        with distributed._quiet_ray(True):
            for folder in folders:
                locations = list(list_locations([str(folder)]))
                started = time.perf_counter()
                dataset = distributed.build_dataset(locations, request, models, plan, options, ray_options)
                rows = sum(batch.num_rows for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
                results.append((time.perf_counter() - started, rows))
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--actors", default="1,2", help="comma-separated actor counts")
    parser.add_argument("--cpus", type=int, default=None, help="logical CPUs of the local Ray [default: actors + 1]")
    parser.add_argument("--preset", default="full", help="full (ViT-B/16 224) or tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--files-per-task", type=int, default=8)
    args = parser.parse_args()
    counts = [int(a) for a in args.actors.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_vit_classifier(root / "vit") if args.preset == "tiny" else checkpoint("nsfw")
        warm, small, large = root / "warm-up", root / "small", root / "large"
        make_photos(warm, 2 * args.batch_size, [(640, 480)], seed=1)
        make_photos(small, args.images, [(640, 480)], seed=2)
        make_photos(large, 2 * args.images, [(640, 480)], seed=3)
        models = ModelSet(nsfw_model=model)
        request = TaskRequest(tasks=("nsfw",))
        options = EngineOptions(batch_size=args.batch_size)

        jobs = models.jobs(request)
        paths = sorted(str(p) for p in small.iterdir())
        list(engine.run(paths[:options.batch_size], jobs, options))  # warm-up

        def local_rate() -> float:
            started = time.perf_counter()
            return len(list(engine.run(paths, jobs, options))) / (time.perf_counter() - started)

        import torch

        local_name = f"local engine, {torch.get_num_threads()} torch threads"
        print(f"model: {args.preset} (random weights); {args.images} and {2 * args.images} JPEGs 640x480; "
              f"batch {args.batch_size}; {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f}")
        print(f"{'setting':<36} {'steady images/s':>16} {'vs 1st':>7} {'total s (N, 2N)':>16}")
        print(f"{local_name + ' (before)':<36} {local_rate():>16.2f}")
        base = None
        for actors in counts:
            cpus = args.cpus or actors + 1
            _, (t1, n1), (t2, n2) = run_ray([warm, small, large], models, request, options, actors, cpus,
                                            args.files_per_task)
            assert (n1, n2) == (args.images, 2 * args.images), (n1, n2)
            steady = (n2 - n1) / (t2 - t1)
            base = base or steady
            print(f"{f'ray, {actors} actor(s), {cpus} logical CPUs':<36} {steady:>16.2f} {steady / base:>6.2f}x "
                  f"{f'{t1:.1f}, {t2:.1f}':>16}")
        print(f"{local_name + ' (after)':<36} {local_rate():>16.2f}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other jobs on this machine slow every row)")


if __name__ == "__main__":
    main()
