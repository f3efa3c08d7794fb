"""Study: every Sora mode from one model, scored against the world's ground truth and chance.

  python experiments/modes.py --workdir=workdirs/demo_tasks/t2v [--num=16] \
      [--out=experiments/results/modes/NAME]

On held-out procedural clips (17 frames; short captions), one trained t2v run does:
  t2v            the caption alone (the reference row)
  image-to-video frame 0 of the clip given; the caption (and again with the direction word
                 swapped, scored against the swapped caption)
  extend         the clip's first 9 frames given, 17 generated (forward)
  extend back    the clip's last 8 frames given (backward)
  connect        clip A's first 5 frames, clip B's last 4 frames, A's caption
  loop           the caption, first and last latent frames tied
  edit           the clip, strength 0.6, its caption with the colour word changed
For each: the world evaluator's colour / shape / direction / plausibility on the generated video
against its caption, the same videos against other clips' captions (chance), and what the mode
must keep: the pixel error of the given frames (given vs generated, /255) and for loops the
last-to-first frame error against the same for plain t2v (a loop should close). Writes table.json,
table.md, samples_<mode>.png and command.txt.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _plots import save_frames_png, write_table  # noqa: E402

from sora_jax.data import pipeline  # noqa: E402
from sora_jax.eval import counterfactual  # noqa: E402
from sora_jax.eval import worlds as world_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402

KEYS = ("color", "shape", "direction", "plausibility")
COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")


def held_out(config, split: str, num: int) -> list[dict]:
  cfg = config.data.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.caption, cfg.batch_size = "short", 1
  it = pipeline.make_iterator(cfg, split, seed=0, shuffle=False, num_epochs=1,
                              process_index=0, process_count=1, drop_remainder=False)
  out = []
  for batch in it:
    video = ((np.asarray(batch["video"][0]) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    out.append({"video": video, "caption": str(batch["caption"][0])})
    if len(out) >= num:
      break
  return out


def recolor(caption: str) -> str:
  """The caption with its colour word replaced by the next palette colour (the edit target)."""
  for i, c in enumerate(COLORS):
    if re.search(rf"\b{c}\b", caption):
      return re.sub(rf"\b{c}\b", COLORS[(i + 1) % len(COLORS)], caption, count=1)
  return caption


def run_modes(t2v: TextToVideo, clips: list[dict]) -> dict[str, dict]:
  n = len(clips)
  rows: dict[str, dict] = {}

  def record(name, videos, captions, kept=None):
    scores = world_eval.score_videos(videos, captions)
    chance = world_eval.score_videos(videos, captions[1:] + captions[:1])
    row = {"adherence": {k: scores[k] for k in KEYS}, "chance": {k: chance[k] for k in KEYS},
           "videos": videos, "captions": captions}
    if kept is not None:
      row["kept_error"] = float(np.mean(kept))
    rows[name] = row
    print(name, {k: (round(scores[k], 3), round(chance[k], 3)) for k in KEYS},
          "kept", row.get("kept_error"), flush=True)

  caps = [c["caption"] for c in clips]
  vids = [t2v(c["caption"], seed=i) for i, c in enumerate(clips)]
  record("t2v", vids, caps)
  loop_ref = [np.abs(v[-1].astype(float) - v[0]).mean() / 255 for v in vids]

  vids, kept = [], []
  for i, c in enumerate(clips):
    v = t2v.image_to_video(c["caption"], c["video"][0], seed=i)
    vids.append(v)
    kept.append(np.abs(v[0].astype(float) - c["video"][0]).mean() / 255)
  record("image-to-video", vids, caps, kept)

  # The same first frames under the opposite direction word, scored against it: does the model
  # read the word, or only continue the motion the frame implies (the world starts a moving
  # object on the side it leaves from)? Clips whose direction comes from the verb are skipped.
  swapped = [(i, c, counterfactual.swap(c["caption"], "direction")) for i, c in enumerate(clips)]
  swapped = [(i, c, s) for i, c, s in swapped if s != c["caption"]]
  if len(swapped) >= 2:
    vids = [t2v.image_to_video(s, c["video"][0], seed=i) for i, c, s in swapped]
    record("image-to-video, direction word swapped", vids, [s for _, _, s in swapped])

  vids, kept = [], []
  for i, c in enumerate(clips):
    v = t2v.extend(c["caption"], c["video"][:9], "forward", num_frames=17, seed=i)
    vids.append(v)
    kept.append(np.abs(v[:9].astype(float) - c["video"][:9]).mean() / 255)
  record("extend forward", vids, caps, kept)

  vids, kept = [], []
  for i, c in enumerate(clips):
    v = t2v.extend(c["caption"], c["video"][8:], "backward", num_frames=17, seed=i)
    vids.append(v)
    kept.append(np.abs(v[-8:].astype(float) - c["video"][-8:]).mean() / 255)
  record("extend backward", vids, caps, kept)

  vids, kept = [], []
  for i, c in enumerate(clips):
    b = clips[(i + 1) % n]
    v = t2v.connect(c["caption"], c["video"][:5], b["video"][8:], num_frames=17, seed=i)
    vids.append(v)
    kept.append(0.5 * (np.abs(v[:5].astype(float) - c["video"][:5]).mean()
                       + np.abs(v[-8:].astype(float) - b["video"][-8:]).mean()) / 255)
  record("connect", vids, caps, kept)

  vids = [t2v.loop(c["caption"], seed=i) for i, c in enumerate(clips)]
  record("loop", vids, caps)
  rows["loop"]["last_to_first_error"] = float(np.mean(
      [np.abs(v[-1].astype(float) - v[0]).mean() / 255 for v in vids]))
  rows["loop"]["last_to_first_error_t2v"] = float(np.mean(loop_ref))

  targets = [recolor(c["caption"]) for c in clips]
  vids = [t2v.edit_video(t, c["video"], 0.6, seed=i) for i, (c, t) in enumerate(zip(clips,
                                                                                    targets))]
  record("edit (colour)", vids, targets)
  rows["edit (colour)"]["source_colour_kept"] = world_eval.score_videos(vids, caps)["color"]
  return rows


def table_md(rows: dict) -> str:
  out = ["| mode | " + " | ".join(f"{k} (chance)" for k in KEYS) + " | given frames kept (error) |",
         "|---|" + "---:|" * (len(KEYS) + 1)]
  for name, r in rows.items():
    cells = [f"{r['adherence'][k]:.2f} ({r['chance'][k]:.2f})" for k in KEYS]
    kept = f"{r['kept_error']:.3f}" if "kept_error" in r else "-"
    out.append(f"| {name} | " + " | ".join(cells) + f" | {kept} |")
  lp = rows.get("loop", {})
  if "last_to_first_error" in lp:
    out.append(f"\nLoop: last-to-first frame error {lp['last_to_first_error']:.3f} "
               f"(plain t2v {lp['last_to_first_error_t2v']:.3f}).")
  ed = rows.get("edit (colour)", {})
  if "source_colour_kept" in ed:
    out.append(f"Edit: the source colour still scores {ed['source_colour_kept']:.2f}.")
  return "\n".join(out) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num", type=int, default=16)
  ap.add_argument("--split", default="test")
  ap.add_argument("--out", default="experiments/results/modes")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "command.txt"), "w") as f:
    f.write("python " + " ".join(sys.argv) + "\n")
  t2v = TextToVideo.from_workdir(a.workdir, on_long="warn")
  rows = run_modes(t2v, held_out(t2v.config, a.split, a.num))
  for name, r in rows.items():
    tag = re.sub(r"[^a-z0-9]+", "_", name).strip("_")
    save_frames_png(r.pop("videos")[:4], r.pop("captions")[:4],
                    os.path.join(a.out, f"samples_{tag}.png"), every=2)
  write_table(a.out, rows, table_md(rows))


if __name__ == "__main__":
  main()
