"""One orbax CheckpointManager for the train state and the grain iterator, together.

Saving both in one step directory is what makes resume exact: the restored run sees the same
parameters, optimizer moments, EMA and the very next batch it would have seen. Orbax writes to a
temporary directory and renames on commit, so a run killed mid-save leaves the previous step
restorable.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from grain import checkpoint as grain_ckpt

log = logging.getLogger(__name__)


class Checkpointer:
  """Saves/restores {state, data} under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
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
      items["data"] = grain_ckpt.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None) -> tuple[int, Any]:
    """Restores onto `abstract_state`'s shardings (so a different mesh reshards on load)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None and self._has_item(step, "data"):
      items["data"] = grain_ckpt.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return step, restored["state"]

  def restore_params(self, abstract_params: Any, step: int | None = None,
                     key: str = "ema_params") -> Any:
    """Restores only one entry of the saved state (e.g. EMA params for sampling)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
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


def _restore_args(x):
  # Without a target sharding (e.g. params for single-device sampling) the arrays land on the
  # first local device rather than on whatever topology wrote the checkpoint.
  sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(
      jax.local_devices()[0])
  return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype)
