"""``--batch-size auto`` and ``--preprocess gpu`` through the installed entry point on a machine
without CUDA: the fast mode says in one line that it runs exact, and the records equal the default's."""

from __future__ import annotations

import json

from .entry import one_clean_line, taglens


def _records(text):
    return {r["path"]: r for r in map(json.loads, text.splitlines()) if r}


def test_auto_batch_and_gpu_preprocess_fall_back_to_the_exact_path_on_the_cpu(checkpoints, image_dir):
    args = ["analyze", image_dir, "--tasks", "tag,nsfw", "--tagger", checkpoints["joytag"],
            "--nsfw-model", checkpoints["vit"], "--device", "cpu", "-q"]
    default = taglens(*args)
    fast = taglens(*args, "--batch-size", "auto", "--preprocess", "gpu")
    assert default.returncode == fast.returncode, fast.stderr
    lines = [line for line in fast.stderr.splitlines() if "--preprocess gpu" in line]
    assert len(lines) == 1 and "exact way" in lines[0] and "Traceback" not in fast.stderr
    assert _records(fast.stdout) == _records(default.stdout) and len(_records(default.stdout)) >= 4


def test_a_batch_size_that_is_neither_a_number_nor_auto_is_a_usage_error(image_dir):
    result = taglens("analyze", image_dir, "--batch-size", "lots")
    assert result.returncode == 2 and "neither a number of images nor 'auto'" in one_clean_line(result)
    zero = taglens("analyze", image_dir, "--batch-size", "0")
    assert zero.returncode == 2 and "is not at least 1" in one_clean_line(zero)
