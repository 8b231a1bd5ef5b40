"""Random weights that spread a model's outputs, so a wrong computation cannot hide; and the
folder layout transformers' own ``save_pretrained`` writes.

transformers' default init leaves LayerNorm gains at 1, biases at 0 and logits crowded in a
corner (SigLIP's logit_bias starts at -10, so every score is ~0). Tests comparing numbers at
1e-5 need outputs that move, so every parameter is redrawn from one seeded stream.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def spread_parameters(model: torch.nn.Module, seed: int) -> None:
    """Redraw every floating parameter: matrices ~ N(0, 1/fan_in), vectors around their role."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.dtype.is_floating_point:
                continue
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                param.copy_(noise / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.25 * noise)
            elif param.ndim == 0 or param.numel() == 1:
                continue  # scalars such as logit_scale / logit_bias are set by the caller
            else:
                param.copy_(0.1 * noise)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


LAYOUTS = ("hub", "transformers")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")


def resave_with_transformers(folder: Path, model: torch.nn.Module) -> Path:
    """Replace a hub-layout folder by what transformers' own ``save_pretrained`` of the model
    and of its processor write: for a model with a tokenizer, ``processor_config.json`` with the
    image processor nested inside and no ``preprocessor_config.json`` (transformers 5)."""
    import shutil

    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    staging = folder.with_name(folder.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    shutil.rmtree(folder)
    staging.rename(folder)
    return folder
