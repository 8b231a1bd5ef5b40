"""Short measurements that choose how matmuls run on this CPU, and their decisions cached per machine.

Two questions, each answered by timing the candidates on this machine, interleaved (a busy
machine slows both alike), best of a few repetitions, in well under a second:

- `float32_route`: do a model's float32 Linear layers run faster through oneDNN with prepacked
  float32 weights than through torch's default (MKL's sgemm, which takes an AVX2 code path on
  AMD CPUs)? The oneDNN route is chosen only where it is at least 5% faster on the model's own
  layer shapes, both for one image's tokens and for a batch's (`PROBE_ROWS`), and its outputs are within 1e-5 (relative to the largest output) of the default's,
  so a oneDNN set to compute float32 in bfloat16 or TF32 is never chosen.
- `int8_offer`: which of torch's int8 engines (fbgemm's x86 kernels, oneDNN's) runs dynamic int8
  Linear layers fastest here, and is it faster than bfloat16 (on typical ViT layer shapes)? ``--dtype int8`` runs either way (it was asked for), on the faster engine; where it
  is not faster than bfloat16, loading a model says so on one warning line
  (`taglens.engine.placement`).

Decisions are kept in ``cpu-routes.json`` in taglens's user cache folder (``$TAGLENS_CACHE_DIR``
when set), keyed by the CPU (model name and feature flags), torch's version, its thread count
and the shapes, so a model loads without measuring again on the same machine.
``TAGLENS_FLOAT32_ROUTE`` changes the float32 choice: ``auto`` (default: the cached decision,
else a probe), ``probe`` (measure again and cache it), ``default`` or ``onednn`` (forced).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from taglens.engine import cpu_routes
from taglens.engine.cpu_routes import onednn_linear, pack_weight, quantize_int8

ROUTE_ENV = "TAGLENS_FLOAT32_ROUTE"
ROUTE_CHOICES = ("auto", "probe", "default", "onednn")
CACHE_ENV = "TAGLENS_CACHE_DIR"
CACHE_FILE = "cpu-routes.json"
MARGIN = 0.95
"""A candidate must take at most this fraction of the other's time to be chosen."""
TOLERANCE = 1e-5
"""Largest difference from the default float32 route, relative to the largest output."""
PROBE_ROWS = (256, 2048)
"""Rows (tokens) of the float32 probe's inputs: one image's patch tokens at 224 px, and a batch's
(8 images at 224 px, or 2.6 at JoyTag's 448). oneDNN must be faster at both: on a Xeon with AMX it
was 8% faster than MKL at 256 rows and 5-10% slower at a batch's rows (docs/analyze.md)."""
REPEATS = 4
INT8_SHAPES = ((1576, 768, 3072), (1576, 3072, 768))
"""(rows, in, out) of the int8 probe: a ViT-B/16 MLP on a batch of 8 images at 224 px."""

Shapes = Counter[tuple[int, int]]
"""(in_features, out_features) -> how many Linear layers of that shape a model has."""

_lock = threading.Lock()


@dataclass(frozen=True)
class Decision:
    """A route chosen and why: ``chosen`` is ``onednn`` or ``default`` (float32), or ``int8`` or
    ``bfloat16`` (the int8 offer); times are the best measured, in ms, for the shapes asked."""

    chosen: str
    times_ms: dict[str, float]
    error: float | None
    source: str
    """``measured``, ``cached`` (measured before on this machine), ``forced by ...`` (the environment)
    or why there was nothing to measure."""

    def line(self) -> str:
        """Why, in a few words: ``measured: default 3.1 ms, onednn 1.6 ms, max relative difference 1.1e-06``."""
        times = ", ".join(f"{name} {ms:.1f} ms" for name, ms in self.times_ms.items())
        error = f", max relative difference {self.error:.1e}" if self.error is not None else ""
        return f"{self.source}: {times}{error}" if times else self.source


def float32_route(shapes: Shapes) -> Decision:
    """The route for float32 Linear layers of these shapes on this machine (see the module doc)."""
    forced = os.environ.get(ROUTE_ENV, "auto").strip().lower() or "auto"
    if forced not in ROUTE_CHOICES:
        raise ValueError(f"{ROUTE_ENV} must be one of {', '.join(ROUTE_CHOICES)}, not {forced!r}")
    if forced in ("default", "onednn"):
        return Decision(forced, {}, None, f"forced by {ROUTE_ENV}")
    if not torch.backends.mkldnn.is_available():
        return Decision("default", {}, None, "oneDNN is not in this torch build")
    precision = getattr(torch.backends.mkldnn.matmul, "fp32_precision", "ieee")
    if precision not in ("ieee", "none"):
        return Decision("default", {}, None, f"oneDNN float32 matmuls are set to {precision}")
    key = f"float32 rows {'/'.join(map(str, PROBE_ROWS))} " + ",".join(f"{i}x{o}*{n}" for (i, o), n in sorted(shapes.items()))
    try:
        return _cached(key, lambda: _probe_float32(shapes), refresh=forced == "probe")
    except RuntimeError as exc:  # a build or CPU whose oneDNN lacks the op: the default route
        return Decision("default", {}, None, f"oneDNN Linear failed here: {str(exc).splitlines()[0]}")


def int8_offer() -> Decision:
    """Whether dynamic int8 is faster than bfloat16 on this machine (``chosen`` is the faster), and
    on which of torch's int8 engines (`int8_engine`)."""
    return _int8_offer()


def int8_engine(offer: Decision) -> str:
    """The int8 engine the offer measured fastest (``x86`` when nothing was measured)."""
    timed = {name.removeprefix("int8 "): ms for name, ms in offer.times_ms.items() if name.startswith("int8 ")}
    return min(timed, key=timed.__getitem__) if timed else "x86"


@cache
def _int8_offer() -> Decision:
    engines = cpu_routes.int8_engines()
    if not engines:
        return Decision("bfloat16", {}, None, "no x86 int8 kernels in this torch build")
    key = "int8 per-channel " + "/".join(engines) + " " + ",".join(f"{r}x{i}x{o}" for r, i, o in INT8_SHAPES)
    return _cached(key, lambda: _probe_int8(engines), refresh=False)


# ----------------------------------------------------------------------------- measuring


def _probe_float32(shapes: Shapes) -> Decision:
    generator = torch.Generator().manual_seed(0)
    totals = {"default": 0.0, "onednn": 0.0}
    error = 0.0
    slower_somewhere = False
    with torch.inference_mode():
        for rows in PROBE_ROWS:
            at_rows = dict.fromkeys(totals, 0.0)
            for (n_in, n_out), count in shapes.items():
                x = torch.randn(rows, n_in, generator=generator)
                w = torch.randn(n_out, n_in, generator=generator) / math.sqrt(n_in)
                b = torch.randn(n_out, generator=generator)
                packed = pack_weight(w)
                candidates = {"default": lambda: F.linear(x, w, b), "onednn": lambda: onednn_linear(x, packed, b)}
                reference, fast = candidates["default"](), candidates["onednn"]()
                error = max(error, float((fast - reference).abs().max() / reference.abs().max().clamp_min(1e-30)))
                for name, seconds in best_interleaved(candidates).items():
                    at_rows[name] += count * seconds
            slower_somewhere |= at_rows["onednn"] > MARGIN * at_rows["default"]
            for name, seconds in at_rows.items():
                totals[name] += seconds
    chosen = "default" if slower_somewhere or error > TOLERANCE else "onednn"
    return Decision(chosen, {k: 1e3 * v for k, v in totals.items()}, error, "measured")


def _probe_int8(engines: tuple[str, ...]) -> Decision:
    generator = torch.Generator().manual_seed(0)
    totals = {f"int8 {engine}": 0.0 for engine in engines} | {"bfloat16": 0.0}
    with torch.inference_mode():
        for rows, n_in, n_out in INT8_SHAPES:
            layer = torch.nn.Linear(n_in, n_out).eval()
            x = torch.randn(rows, n_in, generator=generator)
            candidates = {f"int8 {engine}": _quantized_call(layer, x, engine) for engine in engines}
            half, x16 = copy.deepcopy(layer).to(torch.bfloat16), x.to(torch.bfloat16)
            candidates["bfloat16"] = lambda: half(x16)
            for name, seconds in best_interleaved(candidates).items():
                totals[name] += seconds
    fastest = min((name for name in totals if name != "bfloat16"), key=totals.__getitem__)
    chosen = "int8" if totals[fastest] < totals["bfloat16"] else "bfloat16"  # a warning, not a switch: no margin
    return Decision(chosen, {k: 1e3 * v for k, v in totals.items()}, None, "measured")


def _quantized_call(layer: torch.nn.Linear, x: torch.Tensor, engine: str) -> Callable[[], object]:
    quantized = quantize_int8(torch.nn.Sequential(copy.deepcopy(layer)), engine=engine)
    return lambda: quantized(x)


def best_interleaved(candidates: dict[str, Callable[[], object]], repeats: int = REPEATS) -> dict[str, float]:
    """Each candidate's best time in seconds, the candidates taking turns after one warm-up each."""
    for run in candidates.values():
        run()
    best = dict.fromkeys(candidates, math.inf)
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


# ----------------------------------------------------------------------------- the cache


def _cached(question: str, measure: Callable[[], Decision], *, refresh: bool) -> Decision:
    key = f"{machine_key()} | {question}"
    with _lock:
        stored = {} if refresh else _read_cache()
        if key in stored:
            try:
                return Decision(**{**stored[key], "source": "cached"})
            except TypeError:
                pass  # an entry from another taglens version: measure again
        decision = measure()
        _write_cache(key, decision)
        return decision


def machine_key() -> str:
    """What a measured decision depends on: the CPU, torch's version and its thread count."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            field, _, value = line.partition(":")
            if field.strip() == "model name" and name in ("", platform.processor() or platform.machine()):
                name = value.strip()
            elif field.strip() == "flags":
                flags = value.strip()
                break
    except OSError:
        pass
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{name} (flags {digest}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def cache_path() -> Path:
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        import platformdirs

        folder = platformdirs.user_cache_dir("taglens")
    return Path(folder) / CACHE_FILE


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, decision: Decision) -> None:
    """Add a decision to the cache file (replaced whole by a rename); a cache that cannot be
    written only means measuring again next time."""
    path = cache_path()
    data = _read_cache()
    data[key] = {k: v for k, v in asdict(decision).items() if k != "source"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not cache the CPU route decision in {path} ({exc})", RuntimeWarning, stacklevel=2)
