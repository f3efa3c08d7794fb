"""Shared plotting for experiment scripts (matplotlib, from the `notebooks` extra)."""
from __future__ import annotations

import json
import os

import numpy as np


def load_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(workdir: str, keys: list[str], out_png: str, title: str) -> None:
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    print(f"{workdir} has no metrics.jsonl (an export?): no curves")
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = load_metrics(workdir)
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
  for ax, key in zip(np.atleast_1d(axes), keys):
    # Per key: evaluations log on their own rows, at steps the training rows also use; a resumed
    # run re-logs steps after its last checkpoint, so the last value per step wins.
    by_step = {r["step"]: r[key] for r in rows if key in r}
    steps = sorted(by_step)
    ax.plot(steps, [by_step[s] for s in steps], marker="o" if len(steps) < 20 else None)
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


def save_frames_png(videos: list[np.ndarray], labels: list[str], out_png: str,
                    every: int = 2) -> None:
  """Rows of frames (every `every`-th), one row per video, label on the left."""
  from PIL import Image, ImageDraw
  rows = []
  for v in videos:
    rows.append(np.concatenate(list(v[::every]), axis=1))
  width = max(r.shape[1] for r in rows)
  label_w = 260
  h = rows[0].shape[0]
  canvas = Image.new("RGB", (label_w + width, h * len(rows)), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for i, (r, text) in enumerate(zip(rows, labels)):
    canvas.paste(Image.fromarray(r), (label_w, i * h))
    draw.text((4, i * h + 4), text[:40], fill=(0, 0, 0))
    if len(text) > 40:
      draw.text((4, i * h + 18), text[40:80], fill=(0, 0, 0))
  canvas.save(out_png)


def write_table(out_dir: str, rows: dict, md: str) -> None:
  """A study's table as table.json (the rows) and table.md (`md`), and `md` on stdout."""
  with open(os.path.join(out_dir, "table.json"), "w") as f:
    json.dump(rows, f, indent=2)
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(md)
  print(md)
