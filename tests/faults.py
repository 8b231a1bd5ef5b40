"""Faults injected into a real run, in this process or in a ``taglens`` subprocess (through a
``sitecustomize`` that `subprocess_env` puts first on PYTHONPATH):

- ``TAGLENS_TEST_POISON=nsfw``: the NSFW classifier raises on a *poison* image (`write_poison`:
  solid magenta, which no other test image is), in a batch or alone, as a model that breaks on
  one input would; every other job and image is untouched;
- ``TAGLENS_TEST_ENOSPC=1``: ``os.fsync`` fails with ENOSPC, as a full disk reports it when a
  file system allocates on flush.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SITECUSTOMIZE = "import tests.faults\ntests.faults.install_from_env()\n"


def write_poison(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, (255, 0, 255)).save(path)
    return path


def is_poison(pixels: np.ndarray) -> np.ndarray:
    """(B, C, H, W) normalised pixels -> which images are the solid magenta poison: one value per
    channel, red equal to blue and well above green (whatever the mean and std)."""
    flat = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    solid = (np.ptp(flat, axis=2) < 1e-3).all(axis=1)
    r, g, b = flat[:, 0, 0], flat[:, 1, 0], flat[:, 2, 0]
    return solid & np.isclose(r, b) & (r > g + 0.5)


def poison_nsfw(monkeypatch=None) -> None:
    """Make `taglens.models.vit_classifier.NsfwJob.launch` (the engine's and the server's path to
    the classifier) raise on a poison; with a pytest ``monkeypatch``, only until the test ends."""
    from taglens.engine.transfer import ByteBatch
    from taglens.models.vit_classifier import NsfwJob

    original = NsfwJob.launch

    def launch(self, pixels):
        floats = pixels.normalised() if isinstance(pixels, ByteBatch) else np.asarray(pixels, np.float32)
        if is_poison(floats).any():
            raise RuntimeError("injected: the classifier cannot take this image")
        return original(self, pixels)

    if monkeypatch is not None:
        monkeypatch.setattr(NsfwJob, "launch", launch)
    else:
        NsfwJob.launch = launch  # type: ignore[method-assign]


def full_disk() -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = fsync


def install_from_env() -> None:
    if os.environ.get("TAGLENS_TEST_POISON") == "nsfw":
        poison_nsfw()
    if os.environ.get("TAGLENS_TEST_ENOSPC"):
        full_disk()


def subprocess_env(folder: Path, **faults: str) -> dict[str, str]:
    """The environment for a ``taglens`` subprocess with ``faults`` (the variables above) installed
    at interpreter start; ``folder`` receives the ``sitecustomize.py``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, **faults)
