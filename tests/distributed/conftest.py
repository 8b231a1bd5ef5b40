"""One local Ray instance per test module (Ray takes seconds to start), shut down after it and
checked to leave no Ray process behind. It is always a new instance of its own
(``address="local"``), so a ``ray start --head`` left running on the machine changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from taglens.distributed import ray_init_arguments

    runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT)}, "worker_process_setup_hook": "tests.distributed.hooks.install"}
    ray.init(**ray_init_arguments(num_cpus=2, runtime_env=runtime_env))
    try:
        yield ray
    finally:
        ray.shutdown()
        assert_no_ray_processes_left()


def assert_no_ray_processes_left(timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in psutil.Process().children(recursive=True) if _is_live_ray(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"Ray left processes behind: {[p.name() for p in left]}"


def _is_live_ray(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE and "ray" in " ".join(process.cmdline())
    except psutil.Error:
        return False
