"""Does the direction word change the video? Same noise, only the word differs.

  python experiments/direction_probe.py --workdirs=NAME=WORKDIR[,NAME=WORKDIR...] [--seeds=16] \
      [--out=experiments/results/direction_probe]

For each phrasing of a sideways / vertical motion in the world's own words ("slides to the
right", "bounces upward", ...), one colour and shape, the same `--seeds` noise draws: where the
object starts (frame 0 centroid along the motion's axis, 0 = left / top edge, 1 = right / bottom)
and how far it has moved by frame 6 along that axis (frame widths / heights; > 0 = right / down),
and the evaluator's direction score. A model that reads the word starts and moves its objects
differently for "right" and "left" from the same noise; one that does not gives the same rows.
Writes table.json, table.md and command.txt.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _plots import write_table  # noqa: E402

from sora_jax.eval import worlds as world_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402

PHRASES = (("slides to the right", 0), ("slides to the left", 0), ("slides rightward", 0),
           ("slides leftward", 0), ("bounces to the right", 0), ("bounces to the left", 0),
           ("bounces upward", 1), ("bounces downward", 1))


def probe(t2v, subject: str, seeds: int) -> list[dict]:
  color = world_eval.parse_caption(f"a {subject}")["color"]
  rows = []
  for phrase, axis in PHRASES:
    prompt = f"a {subject} {phrase}"
    videos = t2v([prompt] * seeds, seed=0)
    start, moved, score = [], [], []
    for v in videos:
      det = world_eval.detect(v, color)
      idx = np.nonzero(det["visible"])[0]
      score.append(world_eval.score_video(v, prompt)["direction"])
      if len(idx) >= 2:
        c = det["centroid"][idx]
        start.append(float(c[0, axis]))
        moved.append(float(c[min(6, len(c) - 1), axis] - c[0, axis]))
    rows.append({"prompt": prompt, "start": float(np.mean(start)) if start else float("nan"),
                 "moved": float(np.mean(moved)) if moved else float("nan"),
                 "moved_positive": float(np.mean(np.array(moved) > 0)) if moved else float("nan"),
                 "direction": float(np.mean(score)), "tracked": len(moved)})
  return rows


def table_md(results: dict) -> str:
  out = ["| run | prompt | start | moved by frame 6 | share moving right / down | direction |",
         "|---|---|---:|---:|---:|---:|"]
  for name, rows in results.items():
    for r in rows:
      out.append(f"| {name} | {r['prompt']} | {r['start']:.2f} | {r['moved']:+.3f} | "
                 f"{r['moved_positive']:.2f} | {r['direction']:.2f} |")
  return "\n".join(out) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdirs", required=True, help="NAME=WORKDIR[,NAME=WORKDIR...]")
  ap.add_argument("--subject", default="red square")
  ap.add_argument("--seeds", type=int, default=16)
  ap.add_argument("--out", default="experiments/results/direction_probe")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "command.txt"), "w") as f:
    f.write("python " + " ".join(sys.argv) + "\n")
  results = {name: probe(TextToVideo.from_workdir(w, on_long="warn"), a.subject, a.seeds)
             for name, w in (item.split("=", 1) for item in a.workdirs.split(","))}
  write_table(a.out, results, table_md(results))


if __name__ == "__main__":
  main()
