"""Cross-process barriers that outlast a slow compile.

On CPU, processes exchange data through gloo, whose rendezvous gives up after 30 s. Every
collective in a compiled function, and orbax's default barrier (a psum), is such a rendezvous,
so a process that compiles 30 s slower than its peer (a loaded or cold machine) kills the job
with `Gloo context initialization failed: DEADLINE_EXCEEDED`. The fix is to meet first at the
coordination service, whose barriers take any timeout: after compiling and before running
(`SyncedJit`), and for every orbax checkpoint barrier (`use_coordination_barriers`).

SORA_JAX_BARRIER_TIMEOUT_S sets how long a process waits for its peers (default 900 s).
One process: every function here is a no-op.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any, Callable

import jax

log = logging.getLogger(__name__)
ENV_TIMEOUT = "SORA_JAX_BARRIER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 900
_ORBAX_FLAG = "experimental_orbax_use_distributed_barrier"
_counter = itertools.count()


def barrier_timeout_s() -> int:
  raw = os.environ.get(ENV_TIMEOUT, "")
  if not raw:
    return DEFAULT_TIMEOUT_S
  try:
    value = int(raw)
  except ValueError:
    value = 0
  if value <= 0:
    raise ValueError(f"environment variable {ENV_TIMEOUT}={raw!r} must be a positive number of "
                     f"seconds, e.g. {ENV_TIMEOUT}={DEFAULT_TIMEOUT_S}")
  return value


def use_coordination_barriers() -> None:
  """Orbax checkpoint barriers through the coordination service (a timeout) instead of gloo,
  each under a key no other barrier call has used (`_OccurrenceKeys`)."""
  from absl import flags
  try:
    from orbax.checkpoint._src.multihost import multihost  # defines the flag
  except ImportError:  # an orbax without the flag keeps its collective barrier
    return
  if _ORBAX_FLAG not in flags.FLAGS:
    return
  flags.FLAGS[_ORBAX_FLAG].value = True
  if not isinstance(multihost._unique_barrier_key, _OccurrenceKeys):
    multihost._unique_barrier_key = _OccurrenceKeys(multihost._unique_barrier_key)


class _OccurrenceKeys:
  """Orbax names its barriers by what they guard ('Checkpointer:save'), so every save reuses the
  same keys. Through the coordination service a reused key can pair one process's wait with
  another process's earlier pass: one process walks on into the next collective while its peer
  still waits in the save (seen: a two-process run deadlocked at its first checkpoint, one
  process in orbax's 'Checkpointer:save' barrier, the other in the sampler's all-gather). Every
  process makes the same sequence of barrier calls, so the n-th call with a key gets the suffix
  '#n' and meets exactly the peers' n-th call. Wraps orbax's own hook for unique keys."""

  def __init__(self, inner: Callable[[str], str]):
    self.inner = inner
    self.counts: dict[str, int] = {}
    self.lock = threading.Lock()   # the async save's thread makes barrier calls too

  def __call__(self, key: str) -> str:
    key = self.inner(key)
    with self.lock:
      n = self.counts.get(key, 0)
      self.counts[key] = n + 1
    return f"{key}#{n}"


def sync_processes(name: str) -> None:
  """Blocks until every process reaches the barrier `name` (unique per call in each process)."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed
  key = f"sora_jax/{name}/{next(_counter)}"
  timeout = barrier_timeout_s()
  log.debug("waiting at barrier %s (up to %d s)", key, timeout)
  distributed.global_state.client.wait_at_barrier(key, timeout_in_ms=timeout * 1000)


def _signature(args) -> Any:
  return tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x))),
                str(getattr(x, "sharding", ""))) for x in jax.tree.leaves(args))


class SyncedJit:
  """`jax.jit(fn)` whose first call per input signature compiles, meets the other processes,
  then runs: no collective starts while a peer is still compiling. One process: plain jit."""

  def __init__(self, fn: Callable, name: str, **jit_kwargs):
    self.jitted = jax.jit(fn, **jit_kwargs)
    self.name = name
    self._compiled: dict[Any, Any] = {}

  def __call__(self, *args):
    if jax.process_count() == 1:
      return self.jitted(*args)
    key = _signature(args)
    if key not in self._compiled:
      self._compiled[key] = self.jitted.lower(*args).compile()
      sync_processes(f"compiled/{self.name}")
    return self._compiled[key](*args)


def fetch(tree: Any) -> Any:
  """Host copies of arrays that may be sharded across processes (a model's output under an
  fsdp / tensor mesh spanning hosts): the whole value in every process. Multi-process, this is a
  collective, so every process must call it; one process: `jax.device_get`."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)
