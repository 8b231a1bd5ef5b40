"""The Ray job's parts, run in this process without Ray: the CPU task's output and the model
actor's rows equal the local engine's records; the actor pool's size; how Ray is started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from taglens import distributed, engine
from taglens.io.arrow import records_from_table
from taglens.engine import EngineOptions
from taglens.errors import TaglensError
from taglens.io.inputs import iter_image_paths
from taglens.io.locations import list_locations
from taglens.models.modelset import ModelSet, TaskRequest

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def setup(checkpoints):
    models = ModelSet(tagger=checkpoints["joytag"], siglip=checkpoints["siglip16"], nsfw_model=checkpoints["vit"])
    request = TaskRequest(tasks=("tag", "nsfw", "embed"))
    return models, request, distributed.plan_for(models, request, EngineOptions())


def test_task_and_actor_rows_equal_the_local_engine(setup, image_dir):
    models, request, plan = setup
    locations = list(list_locations([str(image_dir)]))
    refs = distributed._refs_table(locations)
    prepared = distributed.prepare_batch(refs, transforms=plan.transforms, decode=plan.decode, hash_files=True)
    # one tensor column per distinct transform: JoyTag's 448 px, and SigLIP's and the ViT's recipes
    assert len(plan.transforms) == 3 and {f"pixels_{i}" for i in range(3)} <= set(prepared.column_names)
    assert prepared.column("pixels_0").null_count == 1  # the corrupt file has no tensors
    actor = distributed.ModelActor(distributed.model_arguments(models), request, plan)
    table = actor(prepared)  # one batch of 5, as the local engine's batch of 8 holds them all
    assert table.schema.equals(plan.schema, check_metadata=True)
    got = list(records_from_table(table))
    want = list(engine.run(iter_image_paths([str(image_dir)]), models.jobs(request)))
    assert got == want  # facts, errors, tags and nsfw bit for bit: same batch, same process
    for a, b in zip(got, want):
        assert (a.embedding is None) == (b.embedding is None)
        if b.embedding is not None:
            assert np.array_equal(a.embedding, b.embedding)
    # Ray cuts batches its own way; other batch shapes move float32 sums in the last bits only
    halves = list(records_from_table(pa.concat_tables([actor(prepared.slice(0, 2)), actor(prepared.slice(2))])))
    assert [r.path for r in halves] == [r.path for r in want]
    for a, b in zip(halves, want):
        if b.embedding is not None:
            assert np.allclose(a.embedding, b.embedding, rtol=0, atol=1e-6)


def test_an_actor_refuses_models_that_differ_from_the_drivers(setup, checkpoints):
    models, request, plan = setup
    other = distributed.model_arguments(models) | {"siglip": checkpoints["siglip64"]}
    with pytest.raises(TaglensError, match="differ from the driver"):
        distributed.ModelActor(other, request, plan)


@pytest.mark.parametrize("resources, options, expected", [
    ({"CPU": 16.0, "GPU": 4.0}, {}, (4, 1.0)),                    # one actor per GPU
    ({"CPU": 16.0, "GPU": 4.0}, {"num_gpus": 0.5}, (8, 0.5)),     # two actors per GPU
    ({"CPU": 16.0}, {}, (8, 0.0)),                                # half the CPUs decode
    ({"CPU": 2.0}, {}, (1, 0.0)),
    ({"CPU": 2.0}, {"concurrency": 3}, (3, 0.0)),
])
def test_actor_pool_size(resources, options, expected):
    assert distributed.actor_pool(resources, distributed.RayOptions(**options)) == expected


def test_ray_init_arguments(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = distributed.ray_init_arguments(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": "/x"}})
    # "local": a new instance of our own, never a cluster that happens to run on this machine
    assert local["address"] == "local" and local["num_cpus"] == 2 and local["include_dashboard"] is False
    assert local["runtime_env"]["env_vars"]["PYTHONPATH"].split(":") == [SRC, "/x"]
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    remote = distributed.ray_init_arguments()
    assert remote["address"] == "ray://head:10001" and "runtime_env" not in remote
    assert distributed.ray_init_arguments("auto")["address"] == "auto"


def test_importing_the_ray_engine_does_not_import_ray():
    code = "import sys, taglens.distributed, taglens.cli.analyze; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC},
                         timeout=120, check=False)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
