"""Pixels to the device as bytes, normalised there by the same lookup table as on the host.

Every lookup-table transform (JoyTag's, transformers' standard recipe) ends in
``table[c][u8]``: a per-channel 256-entry float32 table computed once with the processor's own
float32 arithmetic. So the decode threads stop at the resized uint8 image (`ImageBytes`, a
quarter of the float32 tensor), batches cross to the device as uint8 (`ByteBatch`), and the
device applies the same table with a gather. The gather copies table entries, so the device's
float32 tensor equals the host's bit for bit by construction (`normalise` vs `normalise_on`).

`DeviceTransfer` does the crossing once per device for every model: a uint8 batch is staged in
a reused host buffer (pinned where CUDA is available), copied on a side stream that the compute
stream then waits on (so the copy of one model's batch overlaps the previous model's compute),
and normalised on the device. `fetch` starts a result's copy back (non-blocking, into pinned
memory) and returns a `Pending` that waits for it only when its record is assembled, so the
three models of a batch are queued with no host synchronisation between them. On the CPU the
streams and events are no-ops and the buffers are not pinned, so the same code runs in tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def normalise(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 through a (3, 256) table: the host path."""
    return np.stack([table[c][pixels[:, :, c]] for c in range(3)])


@dataclass(frozen=True, eq=False)
class ImageBytes:
    """One image after its transform's resize: (H, W, 3) uint8 and the table that normalises it."""

    pixels: Any
    """(H, W, 3) uint8: a numpy array, or a tensor already on the device (``--preprocess gpu``)."""
    table: np.ndarray

    def normalised(self) -> np.ndarray:
        """The transform's float32 (3, H, W) tensor, on the host."""
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray):
            pixels = pixels.cpu().numpy()
        return normalise(pixels, self.table)


@dataclass(frozen=True, eq=False)
class ByteBatch:
    """(B, H, W, 3) uint8 (numpy, or a device tensor) and the one (3, 256) table of its images."""

    pixels: Any
    table: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)

    def normalised(self) -> np.ndarray:
        """The float32 (B, 3, H, W) batch, on the host (what a job that takes no bytes gets)."""
        return np.stack([ImageBytes(p, self.table).normalised() for p in self.pixels])


def collate(inputs: Sequence[Any], *, takes_bytes: bool) -> Any:
    """One batch from items' inputs: a `ByteBatch` for a job that normalises on its device
    (``takes_bytes``) when every input is bytes of one table and shape, else float32 (B, C, H, W)."""
    if inputs and all(isinstance(x, ImageBytes) for x in inputs):
        first = inputs[0]
        alike = all(x.table is first.table or np.array_equal(x.table, first.table) for x in inputs)
        if takes_bytes and alike and len({tuple(x.pixels.shape) for x in inputs}) == 1:
            on_device = [x.pixels for x in inputs if not isinstance(x.pixels, np.ndarray)]
            if not on_device:
                return ByteBatch(np.stack([x.pixels for x in inputs]), first.table)
            import torch  # --preprocess gpu: device tensors, and host arrays of files it sent the exact way

            device = on_device[0].device
            tensors = [torch.from_numpy(np.array(x.pixels)).to(device) if isinstance(x.pixels, np.ndarray)
                       else x.pixels for x in inputs]
            return ByteBatch(torch.stack(tensors), first.table)
    return np.stack([x.normalised() if isinstance(x, ImageBytes) else x for x in inputs])


# ----------------------------------------------------------------------------- streams and events


class _Done:
    """An event that has always happened (the CPU's)."""

    def synchronize(self) -> None:
        return None

    def query(self) -> bool:
        return True


class CopyStream:
    """A side stream for host-to-device copies; on the CPU, every operation is a no-op."""

    def __init__(self, device: torch.device):
        import torch

        self.device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def context(self) -> AbstractContextManager[Any]:
        """Work queued inside runs on the side stream."""
        import torch

        return torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()

    def record(self) -> Any:
        """An event marking the work queued on the side stream so far."""
        if self._stream is None:
            return _Done()
        return self._stream.record_event()

    def hand_over(self, tensor: torch.Tensor) -> torch.Tensor:
        """Make the compute stream wait for the copies so far, and keep ``tensor``'s memory until
        the compute stream is done with it."""
        if self._stream is not None:
            import torch

            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._stream)
            tensor.record_stream(current)
        return tensor


def current_event(device: torch.device) -> Any:
    """An event marking the work queued on ``device``'s compute stream so far."""
    if device.type != "cuda":
        return _Done()
    import torch

    return torch.cuda.current_stream(device).record_event()


# ----------------------------------------------------------------------------- reused host buffers


@dataclass
class _Slot:
    tensor: torch.Tensor
    free_after: Any  # the event after which the buffer may be written again


class StagingBuffers:
    """Reused host buffers for uint8 batches, ``depth`` per shape (pinned where asked).

    A buffer is written again only after the copy that last read it is done (its event), so
    with ``depth=2`` one batch can be staged while the previous one is still crossing. A batch
    larger than a shape's buffers replaces them; a smaller one uses a leading slice.
    """

    def __init__(self, *, pin: bool, depth: int = 2):
        self.pin = pin
        self.depth = depth
        self.allocations = 0
        self._rings: dict[tuple[tuple[int, ...], str], list[_Slot]] = {}
        self._next: dict[tuple[tuple[int, ...], str], int] = {}
        self._lock = threading.Lock()

    def stage(self, array: np.ndarray) -> tuple[torch.Tensor, _Slot]:
        """``array`` copied into a reused buffer: (the tensor view, its slot for `release`)."""
        import torch

        key = (tuple(array.shape[1:]), str(array.dtype))
        with self._lock:
            ring = self._rings.setdefault(key, [])
            index = self._next.get(key, 0)
            self._next[key] = (index + 1) % self.depth
            if index < len(ring) and ring[index].tensor.shape[0] >= len(array):
                slot = ring[index]
                slot.free_after.synchronize()
            else:
                dtype = torch.from_numpy(array[:0]).dtype
                tensor = torch.empty(array.shape, dtype=dtype, pin_memory=self.pin)
                slot = _Slot(tensor, _Done())
                self.allocations += 1
                if index < len(ring):
                    ring[index].free_after.synchronize()
                    ring[index] = slot
                else:
                    ring.append(slot)
        view = slot.tensor[: len(array)]
        np.copyto(view.numpy(), array)
        return view, slot

    @staticmethod
    def release(slot: _Slot, event: Any) -> None:
        slot.free_after = event


# ----------------------------------------------------------------------------- the device's side


class DeviceTransfer:
    """Batches to one device and results back, for every model on it (see the module docstring)."""

    def __init__(self, device: torch.device):
        import torch

        self.device = device
        self.stream = CopyStream(device)
        self.buffers = StagingBuffers(pin=device.type == "cuda" and torch.cuda.is_available())
        self._tables: dict[bytes, torch.Tensor] = {}
        self._lock = threading.Lock()

    def normalised(self, batch: ByteBatch, *, channels_last: bool = False) -> torch.Tensor:
        """A `ByteBatch` as float32 (B, 3, H, W) on the device, contiguous (or channels-last, the
        gather's own layout): bit for bit ``batch.normalised()``."""
        import torch

        table = self._table(batch.table)
        pixels = batch.pixels
        if isinstance(pixels, np.ndarray):
            host, slot = self.buffers.stage(pixels)
            with self.stream.context():
                pixels = host.to(self.device, non_blocking=True)
            self.buffers.release(slot, self.stream.record())
            pixels = self.stream.hand_over(pixels)
        offsets = torch.arange(3, device=self.device, dtype=torch.int32) * 256
        index = pixels.to(self.device, torch.int32) + offsets  # (B, H, W, 3) into the flat table
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return table.reshape(-1)[index].permute(0, 3, 1, 2).contiguous(memory_format=layout)

    def _table(self, table: np.ndarray) -> torch.Tensor:
        import torch

        key = np.ascontiguousarray(table, np.float32).tobytes()
        with self._lock:
            found = self._tables.get(key)
            if found is None:
                found = self._tables[key] = torch.from_numpy(np.array(table, np.float32)).to(self.device)
            return found


_transfers: dict[str, DeviceTransfer] = {}
_transfers_lock = threading.Lock()


def transfer_for(device: torch.device) -> DeviceTransfer:
    """The one `DeviceTransfer` of ``device`` in this process."""
    with _transfers_lock:
        found = _transfers.get(str(device))
        if found is None:
            found = _transfers[str(device)] = DeviceTransfer(device)
        return found


class Pending:
    """A result on its way from the device to host memory; `result` waits for it."""

    def __init__(self, tensor: torch.Tensor, then: Callable[[np.ndarray], np.ndarray] | None = None):
        import torch

        if tensor.device.type == "cuda":
            self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._host.copy_(tensor, non_blocking=True)
            self._ready = current_event(tensor.device)
        else:
            self._host, self._ready = tensor, _Done()
        self._then = then

    def __len__(self) -> int:
        return int(self._host.shape[0])

    def result(self) -> np.ndarray:
        self._ready.synchronize()
        array = self._host.numpy()
        return self._then(array) if self._then is not None else array


def fetch(tensor: torch.Tensor, then: Callable[[np.ndarray], np.ndarray] | None = None) -> Pending:
    """Start copying ``tensor`` to the host; ``then`` runs on the host array once it is there."""
    return Pending(tensor, then)


def resolve(outputs: Any) -> Any:
    """A job's forward output, waited for if it is `Pending`."""
    return outputs.result() if isinstance(outputs, Pending) else outputs
