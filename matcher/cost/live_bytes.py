"""A dispatch mode that follows the bytes of every live tensor storage and their peak. Imports torch, as
matcher/cost/measured.py (its one user) does.

Every op's outputs are seen here; a storage counts from the first op that returns it until Python frees
it (a weakref finalizer), so views, in-place ops and tensors saved for backward are counted once, for as
long as they live. Works the same on real and on FakeTensorMode tensors (where storages have sizes but
no memory). torch's MemTracker does the same with per-module bookkeeping that is several times slower;
tests/test_measure.py checks that the two agree.
"""

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._tracked: set[int] = set()  # ids of live storages already counted

    def track(self, tensors: Iterable[torch.Tensor]) -> None:
        """Count tensors that exist before the mode is entered (weights, optimizer state, inputs)."""
        for t in tensors:
            self._add(t.untyped_storage())
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def _add(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self._tracked:
            return
        nbytes = storage.nbytes()
        self._tracked.add(key)
        self.live_bytes += nbytes
        weakref.finalize(storage, self._free, key, nbytes)

    def _free(self, key: int, nbytes: int) -> None:
        self._tracked.discard(key)
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t.untyped_storage())
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out
