"""Metrics to metrics.jsonl, TensorBoard event files (tensorboardX, no TensorFlow) and a console
line. Only the primary process writes.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)


def _scalar(v: Any) -> float:
  return float(np.asarray(v))


class MetricWriter:

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self._tb = None
    self._jsonl = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    except ImportError:  # TensorBoard files are a convenience; metrics.jsonl is the record.
      log.info("tensorboardX not installed; writing metrics.jsonl only")

  def drop_after(self, step: int) -> int:
    """Drops rows past `step` (and a torn last line) from metrics.jsonl, in place.

    A run that restarts from checkpoint `step` re-runs the steps after it: without this their
    rows would appear twice. Truncating in place keeps the append handle valid."""
    if not self.enabled:
      return 0
    path = os.path.join(self.workdir, "metrics.jsonl")
    kept, dropped = [], 0
    with open(path, "r+") as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          dropped += 1
          continue
        if int(row.get("step", 0)) <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
        else:
          dropped += 1
      if dropped:
        f.seek(0)
        f.writelines(kept)
        f.truncate()
    return dropped

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {k: _scalar(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **row}) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        self._tb.add_scalar(k, v, step)

  def write_video(self, step: int, name: str, frames: np.ndarray, fps: float = 8.0) -> str | None:
    """Writes `workdir/videos/<name>_<step>.mp4` (uint8 [T,H,W,3])."""
    if not self.enabled:
      return None
    from sora_jax.io import video as video_io
    out_dir = os.path.join(self.workdir, "videos")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}_{step:07d}.mp4")
    video_io.write_video(path, frames, fps=fps)
    return path

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def console_line(step: int, total: int, scalars: Mapping[str, Any], steps_per_s: float) -> str:
  keys = [k for k in ("loss", "recon", "psnr", "kl", "grad_norm", "lr") if k in scalars]
  keys += sorted(k for k in scalars if k not in keys)
  parts = [f"{k}={_scalar(scalars[k]):.4g}" for k in keys]
  return f"step {step}/{total} " + " ".join(parts) + f" ({steps_per_s:.2f} steps/s)"
