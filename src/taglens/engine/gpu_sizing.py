"""Sizes for a run on a GPU: the batch from the device's free memory.

``--batch-size auto`` asks `auto_batch_size`: on CUDA the largest power of two whose estimated
working memory fits in half the free memory (``torch.cuda.mem_get_info``), at most
``MAX_AUTO_BATCH``; on the CPU the fixed `CPU_BATCH` (a larger batch buys nothing there). The
estimate is deliberately rough (``ACTIVATION_FACTOR`` times each model's float32 input per
image); an out-of-memory error still halves the batch and caps later ones
(`taglens.engine.core.run_batch`), so a wrong guess costs one retry, never an image.

The decode pool (every core on CUDA, a share beside torch's threads on the CPU) is sized by
`taglens.engine.threads.size_threads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CPU_BATCH = 8
MAX_AUTO_BATCH = 256
ACTIVATION_FACTOR = 64
"""Working memory of a ViT's forward pass per image, in multiples of its float32 input (about 40x
for SigLIP so400m at 224 px and 25x for JoyTag at 448 px in inference mode, rounded up)."""
MEMORY_SHARE = 0.5


def batch_for_memory(free_bytes: int, per_image_bytes: int, *, cap: int = MAX_AUTO_BATCH) -> int:
    """The largest power of two <= ``cap`` whose images fit in ``MEMORY_SHARE`` of ``free_bytes``
    (at least 1)."""
    fits = int(free_bytes * MEMORY_SHARE) // max(1, per_image_bytes)
    size = 1
    while size * 2 <= min(fits, cap):
        size *= 2
    return size


def per_image_bytes(input_sizes: Sequence[int]) -> int:
    """The estimated device memory one image needs in every model of a run (see the module docstring)."""
    return sum(ACTIVATION_FACTOR * 3 * side * side * 4 for side in input_sizes)


def auto_batch_size(device: Any, input_sizes: Sequence[int]) -> int:
    """The batch for ``--batch-size auto`` on ``device`` (a torch device or its name)."""
    import torch

    from taglens.engine.placement import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(resolved)
    return batch_for_memory(free, per_image_bytes(input_sizes or [224]))
