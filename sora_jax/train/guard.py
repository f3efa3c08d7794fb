"""What the loop does about a non-finite step.

The compiled step (train/steps.py) already dropped the update of any step whose loss, gradient
norm or updated parameter norm is not finite, so the state — and every checkpoint — stays
finite. This guard reads each step's `finite` flag one step late (no host sync per step), counts,
and halts by `config.train.nonfinite`: 'halt' at the first such step, 'skip' after
`max_nonfinite` in a row. Halting writes `workdir/nonfinite.json` (the step and the ids of its
batch) and raises NonFiniteError, whose message names the last checkpoint and how to resume.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
  """Training halted on non-finite steps; the message says where to resume."""


class NonFiniteGuard:

  def __init__(self, train_cfg, workdir: str, ckpt, enabled: bool = True):
    self.policy, self.max_in_row = str(train_cfg.nonfinite), int(train_cfg.max_nonfinite)
    self.workdir, self.ckpt, self.enabled = workdir, ckpt, enabled
    self.in_row = self.total = 0
    self._pending = None

  def pending(self, step: int, metrics: dict, batch_ids: list) -> None:
    """Remembers step `step`'s metrics (device arrays) to check on the next call."""
    self._pending = (step, metrics, batch_ids)

  def check_pending(self) -> None:
    if self._pending is None:
      return
    step, metrics, batch_ids = self._pending
    self._pending = None
    if float(np.asarray(metrics["finite"])) >= 1.0:
      self.in_row = 0
      return
    self.in_row += 1
    self.total += 1
    loss = float(np.asarray(metrics["loss"]))
    log.warning("step %d: non-finite loss/gradients/params (loss=%s); its update was dropped "
                "(%d in a row, %d in all)", step, loss, self.in_row, self.total)
    if self.policy == "halt" or self.in_row >= self.max_in_row:
      self._halt(step, loss, batch_ids)

  def _halt(self, step: int, loss: float, batch_ids: list) -> None:
    record = {"step": step, "loss": loss, "in_a_row": self.in_row, "policy": self.policy,
              "batch_ids": batch_ids}
    path = os.path.join(self.workdir, "nonfinite.json")
    if self.enabled:
      with open(path, "w") as f:
        json.dump(record, f, indent=2)
    self.ckpt.wait()
    kept = self.ckpt.all_steps()
    why = ("train.nonfinite='halt'" if self.policy == "halt" else
           f"{self.in_row} in a row (train.max_nonfinite={self.max_in_row})")
    raise NonFiniteError(
        f"non-finite loss/gradients at step {step} ({why}); its update was dropped and nothing "
        f"was saved after it (batch ids in {path}). Checkpoints {kept or 'none'} in "
        f"{self.ckpt.directory} hold finite states (every update is checked). Resume with the "
        f"same command, or from an earlier one with --resume_step=N; consider a lower "
        f"--config.optim.lr")
