"""One orbax CheckpointManager for the train state and the grain iterator, together.

Saving both in one step directory is what makes resume exact: the restored run sees the same
parameters, optimizer moments, EMA and the very next batch it would have seen. Orbax writes to a
temporary directory and renames on commit, so a run killed mid-save leaves the previous step
restorable (tests/train/test_resume.py kills one there, using the SORA_JAX_SLOW_SAVE hook below).

The data iterator's position counts batches, and batch k is the same global batch whatever the
number of processes (data/pipeline.py), so a checkpoint written by N processes resumes in M: when
this layout has no file of its own, process 0's position is used.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from grain import checkpoint as grain_ckpt

log = logging.getLogger(__name__)

# Test-only hook: "STEP:SECONDS" makes the save of STEP sleep SECONDS while its temporary
# directory exists (inside the data item's save), so a test can SIGKILL a run mid-save.
ENV_SLOW_SAVE = "SORA_JAX_SLOW_SAVE"


def _slow_save_seconds(step: int) -> float:
  spec = os.environ.get(ENV_SLOW_SAVE, "")
  if not spec:
    return 0.0
  at, _, seconds = spec.partition(":")
  return float(seconds or 0) if int(at) == step else 0.0


def _single_process_array_writes() -> None:
  """On a one-process CPU run, each array is written whole: no replica-parallel slicing.

  Orbax's default on CPU and TPU splits a replicated array into one slice per replica, so that
  several hosts (or several chips' host transfers) share the writing. On one CPU process the
  replicas are the same memory, and the split is an eager device slice per replica: a data=8
  state of the 0.25M-parameter runlocal DiT became ~2,000 dispatches, 2.0 s per save on the
  2-core box against 0.7 s whole (benchmarks/checkpoint.py). Accelerators and multi-process jobs
  keep orbax's default.
  """
  if jax.process_count() == 1 and jax.default_backend() == "cpu":
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


class Checkpointer:
  """Saves/restores {state, data} under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    _single_process_array_writes()
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None = None,
           force: bool = False) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      delay = _slow_save_seconds(step)
      if delay:
        data_iterator = _SlowState(data_iterator, delay)
      items["data"] = grain_ckpt.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None) -> tuple[int, Any]:
    """Restores onto `abstract_state`'s shardings (so a different mesh reshards on load)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    foreign_data = None
    if data_iterator is not None and self._has_item(step, "data"):
      data_dir = os.path.join(self.directory, str(step), "data")
      mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
      if os.path.exists(os.path.join(data_dir, mine)):
        items["data"] = grain_ckpt.CheckpointRestore(data_iterator)
      else:  # written by another number of processes: take process 0's position
        foreign_data = sorted(glob.glob(os.path.join(data_dir, "process_0-of-*.json")))
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if foreign_data:
      log.warning("data position from %s (another process count)", foreign_data[0])
      with open(foreign_data[0]) as f:
        data_iterator.set_state(json.loads(f.read()))
    return step, restored["state"]

  def delete(self, step: int) -> None:
    self.manager.delete(step)

  def restore_intact(self, abstract_state: Any, data_iterator: Any | None = None,
                     at_most: int | None = None) -> tuple[int, Any]:
    """Restores the newest checkpoint (<= at_most) that reads back; damaged ones are moved to
    `workdir/damaged_checkpoints/<step>` with a message naming them, so the run continues from
    the newest intact step instead of failing on a raw tensorstore/JSON error."""
    steps = sorted((s for s in self.all_steps() if at_most is None or s <= at_most),
                   reverse=True)
    errors = []
    for step in steps:
      try:
        return self.restore(abstract_state, data_iterator, step=step)
      except Exception as e:  # noqa: BLE001 - any unreadable piece makes the step damaged
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        errors.append(f"step {step}: {first}")
        aside = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints", str(step))
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        if jax.process_index() == 0 and os.path.isdir(os.path.join(self.directory, str(step))):
          os.replace(os.path.join(self.directory, str(step)), aside)
        log.warning("checkpoint step %d in %s is damaged (%s); moved to %s, trying the previous "
                    "one", step, self.directory, first, aside)
        self.manager.reload()
    raise FileNotFoundError(f"no intact checkpoint in {self.directory}"
                            + (f" (damaged: {'; '.join(errors)})" if errors else ""))

  def restore_params(self, abstract_params: Any, step: int | None = None,
                     key: str = "ema_params") -> Any:
    """Restores only one entry of the saved state (e.g. EMA params for sampling); without a
    step, the newest checkpoint that reads back (a damaged one is named and skipped)."""
    if step is not None:
      return self._restore_entry(abstract_params, step, key)
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    for s in steps:
      try:
        return self._restore_entry(abstract_params, s, key)
      except Exception as e:  # noqa: BLE001 - any unreadable piece makes the step damaged
        if s == steps[-1]:
          raise FileNotFoundError(f"no intact checkpoint in {self.directory} (oldest, step {s}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else e!r})") from None
        log.warning("checkpoint step %d in %s is damaged (%s); using the previous one", s,
                    self.directory, str(e).splitlines()[0][:200] if str(e) else repr(e))

  def _restore_entry(self, abstract_params: Any, step: int, key: str) -> Any:
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item={key: abstract_params},
            restore_args=jax.tree.map(_restore_args, {key: abstract_params}),
            partial_restore=True)))
    return restored["state"][key]

  def _has_item(self, step: int, name: str) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), name))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class _SlowState:
  """A data iterator whose get_state() (called inside orbax's save) first sleeps: the hook."""

  def __init__(self, it, seconds: float):
    self._it, self._seconds = it, seconds

  def get_state(self):
    log.warning("%s: sleeping %.1fs inside a checkpoint save", ENV_SLOW_SAVE, self._seconds)
    time.sleep(self._seconds)
    return json.dumps(self._it.get_state()).encode()  # grain's non-DatasetIterator branch


def _restore_args(x):
  # Without a target sharding (e.g. params for single-device sampling) the arrays land on the
  # first local device rather than on whatever topology wrote the checkpoint.
  sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(
      jax.local_devices()[0])
  return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype)
