"""Study: does one model generate at every size? World-evaluator adherence (colour, direction,
shape, against chance) of one t2v run at the square training size, 16:9, 9:16, twice the
training duration and one frame (text-to-image), on the same held-out captions and seeds.

  python experiments/native_sizes.py --workdir=workdirs/demo_mix/t2v \
      [--num=32] [--splits=test,test_compositional] [--world=large] \
      [--out=experiments/results/native_sizes/mix]

Writes table.json and table.md (each size's scores, chance, and its ratio to the square size's),
one PNG of sample frames per size and a few signed, watermarked mp4s, with this command in
command.txt. The ratio column is the issue-14 criterion: within 10 % of square (>= 0.90).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _plots import save_frames_png, write_table  # noqa: E402

from sora_jax.eval import t2v_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402

KEYS = ("color", "direction", "shape")


def sizes_for(config) -> dict[str, dict]:
  d = config.data
  return {"square (trained)": {},
          "16:9": {"aspect": "16:9"},
          "9:16": {"aspect": "9:16"},
          "2x duration": {"num_frames": 2 * (d.frames - 1) + 1},
          "image (1 frame)": {"num_frames": 1}}


def table_md(rows: dict) -> str:
  out = ["| split | size | frames x H x W | " + " | ".join(
      f"{k} (chance) | {k} / square" for k in KEYS) + " |",
         "|---|---|---|" + "---:|---:|" * len(KEYS)]
  for split, by_size in rows.items():
    square = by_size["square (trained)"]
    for name, r in by_size.items():
      cells = []
      for k in KEYS:
        a, c = r["adherence"].get(k), r["chance"].get(k)
        if a is None or (k == "direction" and r["size"][0] == 1):
          # A still has no motion: the evaluator scores its direction as presence, not motion.
          cells += ["n/a", "n/a"]
          continue
        base = square["adherence"].get(k)
        ratio = f"{a / base:.2f}" if base else "n/a"
        cells += [f"{a:.2f} ({c:.2f})", ratio]
      out.append(f"| {split} | {name} | {'x'.join(map(str, r['size']))} | " + " | ".join(cells)
                 + " |")
  return "\n".join(out) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num", type=int, default=32)
  ap.add_argument("--splits", default="test,test_compositional")
  ap.add_argument("--out", default="experiments/results/native_sizes")
  ap.add_argument("--videos", type=int, default=2, help="mp4s written per size (test split)")
  ap.add_argument("--world", default="", help="prompts from this world instead of the run's "
                  "(a '_shots' run scored on one-shot prompts: --world=large)")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "command.txt"), "w") as f:
    f.write("python " + " ".join(sys.argv) + "\n")
  t2v = TextToVideo.from_workdir(a.workdir, on_long="warn")
  rows: dict = {}
  for split in a.splits.split(","):
    captions = t2v_eval.held_out_captions(t2v_eval.data_of_world(t2v.config.data, a.world),
                                          split, a.num)
    rows[split] = {}
    for name, size in sizes_for(t2v.config).items():
      r = t2v_eval.evaluate(t2v, captions, size=size)
      videos = r.pop("videos")
      rows[split][name] = r
      print(split, name, r["size"], {k: (round(r["adherence"].get(k, float("nan")), 3),
                                         round(r["chance"].get(k, float("nan")), 3))
                                     for k in KEYS}, flush=True)
      if split != "test":
        continue
      tag = name.split(" ")[0].replace(":", "x")
      save_frames_png(videos[:6], captions[:6], os.path.join(a.out, f"samples_{tag}.png"),
                      every=1 if videos[0].shape[0] == 1 else 4)
      for i in range(a.videos):
        ext = "png" if videos[i].shape[0] == 1 else "mp4"
        t2v.save(videos[i], os.path.join(a.out, f"{tag}_{i}.{ext}"), captions[i], seed=i,
                 overwrite=True, unsigned=True)
  write_table(a.out, rows, table_md(rows))


if __name__ == "__main__":
  main()
