"""The one-pass pipeline as a Ray Data job: ``taglens analyze --engine ray`` (see docs/distributed.md).

    driver      check the output location, list the inputs (`taglens.io.locations`: paths, globs,
                s3://...), connect to Ray, then load the models once to plan the job
    CPU tasks   read, hash, decode once, apply each model's transform (`engine.prepare_source`)
    actor pool  one `ModelSet` per actor (one actor per GPU) runs every job (`engine.run_prepared`)
    writers     Parquet files in the `taglens.io.arrow` record schema, all in one output folder

The numbers are the local engine's: the same decode, the same transforms, the same jobs, only
spread over processes and machines. A bad file becomes an error row in the CPU task, never an
exception; a task or actor that dies (a lost node, an OOM kill) is retried by Ray. ``resume``
skips the paths already present in the output folder. Ray is imported only when a job runs
(``pip install taglens[ray]``).

Without an address (``--address`` or ``RAY_ADDRESS``) the job starts its own local Ray instance
(``address="local"``), never joining a cluster that happens to run on the machine. Whatever
cannot work fails before any model loads, in one line that says what to do: an output location
that cannot be written, an input bucket that is missing, unreadable or unreachable, a Ray
address that does not answer, refuses this process's token (Ray's token authentication) or is a
Ray Client address (``ray://``), over which Ray Data cannot run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taglens import engine
from taglens.io.arrow import fields_for_tasks, job_metadata, record_schema, records_to_table
from taglens.engine import EngineOptions, Prepared, Transform
from taglens.engine.transfer import ImageBytes
from taglens.errors import TaglensError
from taglens.io.decode import DecodeOptions
from taglens.io.locations import (
    Location,
    check_bucket,
    filesystem_for,
    is_object_store,
    is_uri,
    list_locations,
    read_location,
    storage_error,
)
from taglens.records import Record
from taglens.models.modelset import ModelSet, TaskRequest

log = logging.getLogger(__name__)

_REFS = pa.schema([("path", pa.string()), ("fs_path", pa.string()), ("remote", pa.bool_()),
                   ("mtime", pa.float64())])
_FACTS = record_schema((), facts=True)  # path, error and the file facts


class RayMissingError(TaglensError):
    """Ray is not installed (``pip install taglens[ray]``)."""


class RayConnectionError(TaglensError):
    """The Ray cluster named by ``--address`` or ``RAY_ADDRESS`` cannot be used (or a local
    instance cannot start); the message says what to do."""


@dataclass(frozen=True)
class RayOptions:
    """How the job is spread over the cluster.

    ``address``: a running cluster to join (``auto``, or its GCS address ``host:6379``); None
    uses RAY_ADDRESS when set, else starts a local Ray instance for this run (``local``).
    ``ray://`` (Ray Client) addresses are refused: Ray Data does not run over Ray Client.
    ``concurrency``: model actors; default one per GPU when the cluster has GPUs, else half its
    CPUs (the other half read and decode). ``num_gpus``: GPUs per actor (default 1 when the cluster has GPUs, else
    0; 0.5 packs two actors on a GPU). ``files_per_task``: files one CPU task reads and decodes;
    ``decode_memory``: bytes of memory reserved for each such task (its image and tensors).
    ``rows_per_file``: rows buffered before a Parquet file is written (fewer, larger files;
    a crash loses at most these unwritten rows, which ``resume`` then redoes).
    """

    address: str | None = None
    concurrency: int | None = None
    num_gpus: float | None = None
    cpus_per_actor: float = 1.0
    files_per_task: int = 16
    decode_memory: int = 256 * 2**20
    rows_per_file: int = 4096
    quiet: bool = False


@dataclass(frozen=True)
class RayRun:
    """What a run did: the Parquet files it wrote, and how many rows succeeded or failed;
    ``skipped`` paths were already in the output (``resume``)."""

    output: str
    files: tuple[str, ...]
    done: int
    errors: int
    skipped: int
    seconds: float


@dataclass(frozen=True)
class Plan:
    """What the driver learns from the models once (loaded on CPU, then dropped) and every task
    and actor must agree on: the transforms, the decode options and the output schema."""

    transforms: tuple[Transform, ...]
    decode: DecodeOptions
    schema: pa.Schema
    identity: tuple[tuple[str, str, str], ...]  # (job name, model id, revision) per job


def plan_for(models: ModelSet, request: TaskRequest, options: EngineOptions) -> Plan:
    """Load the request's models on the CPU to read their transforms, identity and embedding
    size; the weights are dropped on return (the actors load their own)."""
    probe = ModelSet(**model_arguments(models) | {"device": "cpu", "dtype": "float32", "compile": False})
    jobs = probe.jobs(request)
    transforms, decode = engine.job_transforms(jobs, options.decode)
    dim = probe.load_embedder().dim if "embed" in request.tasks else None
    schema = record_schema(fields_for_tasks(request.tasks), dim, facts=True, metadata=job_metadata(jobs))
    return Plan(tuple(transforms), decode, schema, _identity(jobs))


def model_arguments(models: ModelSet) -> dict[str, Any]:
    """What a `ModelSet` is built from (checkpoints, device, dtype, compile): it travels to the
    actors, loaded weights do not."""
    return {f.name: getattr(models, f.name) for f in fields(models)
            if f.init and not f.name.startswith("_")}


def analyze(
    inputs: Sequence[str],
    request: TaskRequest,
    models: ModelSet,
    output: str | os.PathLike,
    *,
    options: EngineOptions | None = None,
    ray_options: RayOptions | None = None,
    recursive: bool = True,
    resume: bool = False,
) -> RayRun:
    """Run ``request`` over every image named by ``inputs`` on Ray; write Parquet into ``output``
    (a folder, local or a URI such as ``s3://bucket/run1``). The folder must hold no Parquet
    files yet, unless ``resume``: then the paths it holds are skipped and new files are added."""
    options = options or EngineOptions()
    ray_options = ray_options or RayOptions()
    started = time.perf_counter()
    folder = OutputFolder(output)
    folder.check_writable()  # before anything else: a run whose results cannot be kept never starts
    before = folder.files()
    if before and not resume:
        raise TaglensError(f"{output} already holds Parquet files; resume the run (--resume) to add to them, "
                           "or choose an empty folder")
    locations = list(list_locations(inputs, recursive=recursive))
    todo: list[Location] = []
    if locations:
        with ray_session(ray_options.address), _quiet_ray(ray_options.quiet):
            plan = plan_for(models, request, options)
            done = folder.check_and_read_paths(plan.schema) if before else set()
            todo = [loc for loc in locations if loc.path not in done]
            if todo:
                dataset = build_dataset(todo, request, models, plan, options, ray_options)
                try:
                    dataset.write_parquet(folder.uri, filesystem=folder.filesystem, schema=plan.schema,
                                          min_rows_per_file=ray_options.rows_per_file)
                except TaglensError:
                    raise
                except Exception as exc:  # a remote traceback ends with its cause: say that one line
                    raise TaglensError(f"the Ray job writing into {output} failed: {_last_line(exc)}") from None
    new = sorted(set(folder.files()) - set(before))
    rows, errors = folder.count(new)
    return RayRun(str(output), tuple(new), rows - errors, errors, len(locations) - len(todo),
                  time.perf_counter() - started)


def build_dataset(locations: Sequence[Location], request: TaskRequest, models: ModelSet, plan: Plan,
                  options: EngineOptions, ray_options: RayOptions):
    """The lazy Ray Dataset of result rows (in the record schema) for ``locations``."""
    import ray
    import ray.data

    step = max(1, ray_options.files_per_task)
    blocks = [_refs_table(locations[i:i + step]) for i in range(0, len(locations), step)]
    concurrency, num_gpus = actor_pool(ray.cluster_resources(), ray_options)
    # The decode tasks' memory reservation also keeps Ray Data from fusing them into the model
    # actors (it fuses operators whose resources are equal), which would serialise decoding
    # with the models and pin it to the actors' CPUs.
    prepared = ray.data.from_arrow(blocks).map_batches(
        prepare_batch, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
        fn_kwargs={"transforms": plan.transforms, "decode": plan.decode, "hash_files": options.hash_files},
        num_cpus=1, memory=ray_options.decode_memory,
    )
    return prepared.map_batches(
        ModelActor, batch_format="pyarrow", batch_size=options.batch_size, zero_copy_batch=True,
        fn_constructor_kwargs={"model_args": model_arguments(models), "request": request, "plan": plan},
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_gpus=num_gpus,
        num_cpus=ray_options.cpus_per_actor,
    )


def prepare_batch(refs: pa.Table, *, transforms: Sequence[Transform], decode: DecodeOptions,
                  hash_files: bool) -> pa.Table:
    """CPU task: read, hash and decode each file once and apply every transform. Returns the
    file facts (``path``, ``error``, ``sha256``...) and per transform ``i`` the pixels as raw
    bytes (``pixels_i``, null for a failed file: uint8 HWC for a lookup-table transform, normalised
    on the actor's device, else float32 CHW) with their shape (``shape_i``)."""
    records: list[Record] = []
    arrays: list[dict[Any, np.ndarray] | None] = []
    for row in refs.to_pylist():
        location = Location(row["path"], row["fs_path"], row["remote"], row["mtime"])
        prepared = _prepare(location, transforms, decode, hash_files)
        records.append(prepared.record)
        arrays.append(prepared.arrays)
    table = records_to_table(records, _FACTS)
    for i, transform in enumerate(transforms):
        pixels = [None if a is None else _raw_pixels(a[transform]) for a in arrays]
        table = table.append_column(f"pixels_{i}", pa.array(
            [None if p is None else p.tobytes() for p in pixels], pa.large_binary()))
        table = table.append_column(f"shape_{i}", pa.array(
            [None if p is None else list(p.shape) for p in pixels], pa.list_(pa.int32())))
    return table


def _prepare(location: Location, transforms: Sequence[Transform], decode: DecodeOptions,
             hash_files: bool) -> Prepared:
    if not location.remote:
        prepared = engine.prepare_source(location.fs_path, transforms, decode, hash_files=hash_files)
        prepared.record = prepared.record.with_fields(path=location.path)
        return prepared
    try:
        data = read_location(location, decode.max_bytes)
    except TaglensError as exc:
        return Prepared(Record(path=location.path, error=getattr(exc, "reason", str(exc))))
    prepared = engine.prepare_source(data, transforms, decode, hash_files=hash_files)
    prepared.record = prepared.record.with_fields(path=location.path, mtime=location.mtime)
    return prepared


class ModelActor:
    """Actor: one `ModelSet` loaded once, every job run on each batch of prepared images."""

    def __init__(self, model_args: dict[str, Any], request: TaskRequest, plan: Plan):
        self.jobs = ModelSet(**model_args).jobs(request)
        self.plan = plan
        transforms, _ = engine.job_transforms(self.jobs, EngineOptions().decode)
        if tuple(transforms) != plan.transforms or _identity(self.jobs) != plan.identity:
            raise TaglensError(
                f"the models on this node differ from the driver's: {_identity(self.jobs)} here, "
                f"{plan.identity} on the driver (a different hub revision or checkpoint folder?)")

    def __call__(self, batch: pa.Table) -> pa.Table:
        facts = batch.select(list(_FACTS.names)).to_pylist()
        pixels = [_pixel_rows(batch, i, t) for i, t in enumerate(self.plan.transforms)]
        prepared = [
            Prepared(Record(**row), None if row["error"] is not None else
                     {t: pixels[k][i] for k, t in enumerate(self.plan.transforms)})
            for i, row in enumerate(facts)
        ]
        return records_to_table(engine.run_prepared(prepared, self.jobs), self.plan.schema)


def _raw_pixels(pixels: Any) -> np.ndarray:
    if isinstance(pixels, ImageBytes):
        return np.ascontiguousarray(pixels.pixels, np.uint8)
    return np.ascontiguousarray(pixels, np.float32)


def _pixel_rows(batch: pa.Table, index: int, transform: Transform) -> list[Any]:
    data = batch.column(f"pixels_{index}").combine_chunks()
    shapes = batch.column(f"shape_{index}").to_pylist()
    table = getattr(transform, "table", None) if hasattr(transform, "to_bytes") else None
    rows: list[Any] = []
    for i, shape in enumerate(shapes):
        if shape is None:
            rows.append(None)
        elif table is not None:
            rows.append(ImageBytes(np.frombuffer(data[i].as_buffer(), np.uint8).reshape(shape), table))
        else:
            rows.append(np.frombuffer(data[i].as_buffer(), np.float32).reshape(shape))
    return rows


def _refs_table(locations: Sequence[Location]) -> pa.Table:
    return pa.table({"path": [x.path for x in locations], "fs_path": [x.fs_path for x in locations],
                     "remote": [x.remote for x in locations], "mtime": [x.mtime for x in locations]},
                    schema=_REFS)


def _identity(jobs: Sequence[engine.Job]) -> tuple[tuple[str, str, str], ...]:
    return tuple((job.name, job.model_id, job.revision) for job in jobs)


def actor_pool(resources: dict[str, float], ray_options: RayOptions) -> tuple[int, float]:
    """(model actors, GPUs per actor) for a cluster with ``resources`` (``ray.cluster_resources()``):
    one actor per GPU when there are GPUs, else half the CPUs, unless the options say otherwise."""
    gpus = resources.get("GPU", 0)
    cpus = resources.get("CPU", 1)
    num_gpus = ray_options.num_gpus if ray_options.num_gpus is not None else (1.0 if gpus else 0.0)
    if ray_options.concurrency is not None:
        concurrency = ray_options.concurrency
    elif num_gpus:
        concurrency = max(1, int(gpus // num_gpus))
    else:
        concurrency = max(1, int(cpus // (2 * ray_options.cpus_per_actor)))
    if concurrency * ray_options.cpus_per_actor >= cpus:
        log.warning("%d model actors of %g CPUs leave none of the cluster's %g CPUs for decoding; "
                    "the job will wait for more CPUs", concurrency, ray_options.cpus_per_actor, cpus)
    return concurrency, num_gpus


LOCAL = "local"
RAY_DEFAULT_PORT = 6379
CONNECT_TIMEOUT_S = 5.0


def ray_address(address: str | None = None) -> str:
    """The Ray address a job uses: ``address``, else RAY_ADDRESS, else ``local`` (a new local
    instance; ``ray.init(address=None)`` would join any cluster already running on the machine)."""
    return address or os.environ.get("RAY_ADDRESS") or LOCAL


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[None]:
    """Use the Ray session this process already has; else join ``address`` (or RAY_ADDRESS), or
    start a local instance, and shut it down on exit. A local instance's workers import this
    same taglens (its source folder goes on their PYTHONPATH). A cluster that cannot be used
    raises `RayConnectionError` with one line that says what to do."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    connect(ray, ray_init_arguments(address, **init_kwargs), given=address)
    try:
        yield
    finally:
        ray.shutdown()


def ray_init_arguments(address: str | None = None, **init_kwargs: Any) -> dict[str, Any]:
    """``ray.init`` keyword arguments: quiet logging; for a local instance no dashboard, and
    taglens's own source folder on the workers' PYTHONPATH unless it is an installed package."""
    address = ray_address(address)
    arguments: dict[str, Any] = {"address": address, "logging_level": logging.WARNING} | init_kwargs
    if address == LOCAL:
        arguments.setdefault("include_dashboard", False)
        source = str(Path(__file__).resolve().parents[1])
        if Path(source).name not in ("site-packages", "dist-packages"):
            runtime_env = dict(arguments.get("runtime_env") or {})
            env_vars = dict(runtime_env.get("env_vars") or {})
            extra = env_vars.get("PYTHONPATH") or os.environ.get("PYTHONPATH")
            env_vars["PYTHONPATH"] = os.pathsep.join([source] + ([extra] if extra else []))
            arguments["runtime_env"] = runtime_env | {"env_vars": env_vars}
    return arguments


def connect(ray: Any, arguments: dict[str, Any], *, given: str | None = None) -> None:
    """``ray.init(**arguments)``, with every way it can fail turned into one `RayConnectionError`
    line. Joining a cluster, Ray's core prints its retries straight to stderr (tens of lines over
    seconds or minutes): they are held back and read to tell a refused token from a wrong address."""
    address = arguments["address"]
    named = f"--address {address}" if given else f"RAY_ADDRESS={address}"
    local_hint = "leave out --address (and RAY_ADDRESS) to start a local Ray instance instead"
    if address == LOCAL:
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = auth_log.level
        auth_log.setLevel(logging.ERROR)  # "token authentication is enabled" for our own instance
        try:
            ray.init(**arguments)
        except Exception as exc:
            raise RayConnectionError(f"could not start a local Ray instance ({_last_line(exc)})") from None
        finally:
            auth_log.setLevel(level)
        return
    if address.startswith("ray://"):
        raise RayConnectionError(
            f"{named}: the ray engine runs Ray Data, which cannot run over Ray Client (ray://); run taglens on a "
            f"node of the cluster with --address HEAD:{RAY_DEFAULT_PORT} (or auto), or submit it there with "
            "`ray job submit -- taglens analyze ...`")
    _check_reachable(address, named, local_hint)
    with _held_stderr() as held:
        try:
            ray.init(**arguments)
            return
        except (Exception, SystemExit) as exc:  # Ray's core ends a hopeless connect with SystemExit
            failure, said = exc, f"{exc} {held.text()}"
    if "InvalidAuthToken" in said or "Unauthenticated" in said or "AuthenticationError" in type(failure).__name__:
        raise RayConnectionError(
            f"{named}: the cluster refused this process's authentication token (Ray token authentication); set "
            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, as `ray get-auth-token` prints it on "
            f"the head node, or {local_hint}")
    if "Could not find any running Ray instance" in said:
        raise RayConnectionError(f"{named}: no running Ray cluster found on this machine; start one with "
                                 f"`ray start --head`, or {local_hint}")
    raise RayConnectionError(f"{named}: could not connect to a Ray cluster there ({_last_line(failure)}); "
                             f"check the address (the head's HOST:{RAY_DEFAULT_PORT}), or {local_hint}")


def _check_reachable(address: str, named: str, hint: str) -> None:
    """A quick TCP connect to ``host:port``: a closed port would keep ``ray.init`` retrying for
    minutes. ``auto`` and other names Ray resolves itself are left to it."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(RAY_DEFAULT_PORT))
    if not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RayConnectionError(f"{named}: nothing answers at {host}:{port} ({reason}); is `ray start --head` "
                                 f"running there? Or {hint}") from None


class _HeldText:
    def __init__(self, file: Any):
        self._file = file

    def text(self) -> str:
        self._file.seek(0)
        return self._file.read().decode(errors="replace")


@contextlib.contextmanager
def _held_stderr() -> Iterator[_HeldText]:
    """File descriptor 2 into a temporary file for the block (Ray's C++ core writes there, past
    Python's logging); what it held is logged at debug level afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        held = _HeldText(file)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.debug("Ray said while connecting: %s", held.text())


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text (a remote traceback ends with its cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissingError("the ray engine needs Ray: pip install 'taglens[ray]'") from None
    return ray


@contextlib.contextmanager
def _quiet_ray(quiet: bool) -> Iterator[None]:
    """No Ray Data progress bars or progress logs (nor its notice that they are off) while ``quiet``."""
    if not quiet:
        yield
        return
    from ray.data import DataContext

    context = DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = (context.enable_progress_bars, logger.level)
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars, level = saved
        logger.setLevel(level)


@dataclass
class OutputFolder:
    """The output folder (local or a URI): its Parquet files, the paths they hold, their counts.

    A file that cannot be read (cut short when a run was killed while writing it) is renamed
    aside to ``.NAME.incomplete`` on resume, so readers of the folder skip it and its images are
    done again.
    """

    output: str | os.PathLike
    uri: str = field(init=False)
    filesystem: Any = field(init=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        from pyarrow import fs as pafs

        text = os.fspath(self.output)
        if is_uri(text):
            try:
                self.filesystem, self.root = filesystem_for(text)
            except OSError as exc:  # e.g. resolving an S3 bucket's region over an unreachable endpoint
                raise storage_error(text, exc, writing=True) from None
            self.uri = self.root
        else:
            self.filesystem, self.root = pafs.LocalFileSystem(), os.path.abspath(text)
            self.uri = self.root

    def check_writable(self) -> None:
        """Make the folder (a bucket must exist already) and write and delete a probe file in it:
        a location that cannot take the results fails here, in one line, before any model loads."""
        where = os.fspath(self.output)
        probe = f"{self.root.rstrip('/')}/.taglens-write-check-{uuid.uuid4().hex}"
        try:
            check_bucket(self.filesystem, self.root, where)
            if not is_object_store(self.filesystem):  # object stores have no folders to make
                self.filesystem.create_dir(self.root, recursive=True)
            with self.filesystem.open_output_stream(probe) as stream:
                stream.write(b"")
            self.filesystem.delete_file(probe)
        except OSError as exc:
            raise storage_error(where, exc, writing=True) from None

    def files(self) -> list[str]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.root, allow_not_found=True)
        try:
            found = self.filesystem.get_file_info(selector)
        except OSError as exc:
            raise storage_error(os.fspath(self.output), exc) from None
        return sorted(info.path for info in found
                      if info.type == pafs.FileType.File and info.path.endswith(".parquet")
                      and not info.base_name.startswith((".", "_")))

    def check_and_read_paths(self, schema: pa.Schema) -> set[str]:
        """The paths already written; refuses a folder written with other tasks or models."""
        done: set[str] = set()
        for path in self.files():
            try:
                found = pq.read_schema(path, filesystem=self.filesystem)
                table = pq.read_table(path, columns=["path"], filesystem=self.filesystem)
            except (OSError, pa.ArrowException) as exc:
                aside = f"{os.path.dirname(path)}/.{os.path.basename(path)}.incomplete"
                log.warning("%s is unreadable (%s); moved to %s, its images will be done again", path, exc, aside)
                self.filesystem.move(path, aside)
                continue
            if found.remove_metadata() != schema.remove_metadata() or found.metadata != schema.metadata:
                raise TaglensError(f"{path} was written with other tasks or models than this run's; "
                                   "resume with the same options, or write to another folder")
            done.update(table.column("path").to_pylist())
        return done

    def count(self, files: Sequence[str]) -> tuple[int, int]:
        """(rows, rows with an error) in ``files``."""
        rows = errors = 0
        for path in files:
            column = pq.read_table(path, columns=["error"], filesystem=self.filesystem).column("error")
            rows += len(column)
            errors += len(column) - column.null_count
        return rows, errors
