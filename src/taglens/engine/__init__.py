"""The engine: the one runner under every door (see `taglens.engine.run`).

    from taglens.engine import EngineOptions, run
    for record in run(paths, jobs, EngineOptions(batch_size=8)): ...
"""

from __future__ import annotations

from taglens.engine.core import Job, Outcome, SplitJob
from taglens.engine.prepare import Prepared, Transform, job_transforms, prepare_source
from taglens.engine.run import Engine, EngineOptions, assemble, groups_of, run, run_prepared

__all__ = ["Engine", "EngineOptions", "Job", "Outcome", "Prepared", "SplitJob", "Transform", "assemble",
           "groups_of", "job_transforms", "prepare_source", "run", "run_prepared"]
