"""benchmarks/gpu.py keeps working: its CPU smoke mode runs as a subprocess and prints every row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
ROWS = ["joytag alone", "siglip alone", "nsfw (vit) alone", "siglip embed (engine)", "three models (engine, JPEG decode)"]


def test_the_gpu_benchmark_smoke_mode_prints_its_table(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARK), "--device", "cpu", "--smoke", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = lines[0], [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert "images/s" in header and "max |d| vs CPU fp32" in header
    got = {(row[0], row[1], row[2]) for row in rows}
    for dtype in ("float32", "bfloat16"):
        for name in ROWS[:3]:
            assert (name, dtype, "-") in got
        for name in ROWS[3:]:
            assert {(name, dtype, "exact"), (name, dtype, "fast")} <= got
    assert len(rows) == 14 and all(float(row[4]) > 0 for row in rows)
    by_key = {(row[0], row[1], row[2]): row for row in rows}
    # on the CPU, float32 exact: the uint8 + lookup path is the reference path, bit for bit
    for name in ROWS[:3]:
        assert float(by_key[(name, "float32", "-")][6]) == 0.0
    assert float(by_key[("three models (engine, JPEG decode)", "float32", "exact")][6]) == 0.0
    # fast mode without CUDA says so, and its deviation (device geometry) is small but real
    fast = by_key[("three models (engine, JPEG decode)", "float32", "fast")]
    assert "fell back to exact" in fast[7] and 0.0 < float(fast[6]) < 0.05
    assert float(by_key[("three models (engine, JPEG decode)", "bfloat16", "exact")][6]) < 0.05
