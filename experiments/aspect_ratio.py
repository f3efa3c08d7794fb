"""Aspect ratio: train on 16:9 video at its native size, or on square centre crops of the same
video, then generate 16:9 from both and ask whether the object is in frame (Sora's composition
claim: models trained on square crops sometimes leave the subject only partly in view).

  python experiments/aspect_ratio.py                    # CPU size: 17x64x112 renders
  python experiments/aspect_ratio.py --wide 64x112 --steps 2000 --eval_num 32

Both runs read the same rendered clips (shapes_world builder '17x<H>x<W>'): `native` trains on
them whole (140 tokens at 64x112), `square_crop` on their 64x64 centre crops (80 tokens; objects
near the left and right edges are cut or gone). After training, each generates the held-out
prompts at the wide size and the world evaluator scores adherence and framing: the share of the
frames showing the prompted object in which all of it is in frame. The held-out clips
themselves give the reference framing (objects bounce off the walls, so it is below 1).
Writes experiments/results/aspect_ratio/{table.json,table.md,plot.png}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import _study  # noqa: E402

WIDE_KEYS = ("color", "direction", "shape", "framing")


def points(wide: tuple[int, int], frames: int = 17) -> list[dict]:
  h, w = wide
  render = f"{frames}x{h}x{w}"
  square = min(h, w)
  return [{"data.builder_config": render, "data.height": h, "data.width": w},   # native
          {"data.builder_config": render, "data.height": square, "data.width": square}]


def data_framing(config, wide: tuple[int, int], num: int) -> float:
  """Framing of the held-out clips themselves, at the wide size: the reference level."""
  from sora_jax.data import pipeline
  from sora_jax.eval import worlds as world_eval
  cfg = config.data.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.height, cfg.width = wide
    cfg.caption, cfg.batch_size = "short", 1
  it = pipeline.make_iterator(cfg, "test", seed=0, shuffle=False, num_epochs=1,
                              process_index=0, process_count=1, drop_remainder=False)
  scores = []
  for _, batch in zip(range(num), it):
    video = np.clip(np.round((batch["video"][0] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    scores.append(world_eval.score_video(video, str(batch["caption"][0]),
                                         float(cfg.fps))["framing"])
  return float(np.nanmean(scores))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=1000)
  ap.add_argument("--wide", default="64x112", help="HxW of the renders and of the generations")
  a = ap.parse_args(argv)
  wide = tuple(int(v) for v in a.wide.split("x"))
  size = {"height": wide[0], "width": wide[1]}

  def after(p, c, wd):
    from sora_jax.eval import t2v_eval
    path = os.path.join(wd, "wide_eval.json")
    if not os.path.exists(path):
      r = t2v_eval.evaluate_workdir(wd, "test", a.eval_num * 2, size=size)
      with open(path, "w") as f:
        json.dump(r, f)
    r = json.load(open(path))
    out = {f"wide_{k}": r["adherence"][k] for k in WIDE_KEYS}
    out.update({f"wide_{k}_chance": r["chance"][k] for k in WIDE_KEYS})
    return out

  pts = points(wide)
  rows = _study.run_study("aspect_ratio", pts, a, x="data.width", series=None, after=after,
                          title="aspect ratio: native 16:9 vs square-crop training",
                          note=f"wide_* columns: generated at {a.wide} from "
                               f"{a.eval_num * 2} held-out prompts; the rest at each run's "
                               "training size.")
  if rows:
    ref = data_framing(_study.config_for(pts[0], steps=a.steps, eval_num=a.eval_num,
                                         smoke=a.smoke), wide, a.eval_num * 2)
    out = a.out or os.path.join("experiments", "results", "aspect_ratio")
    lines = ["", "| run | framing at " + a.wide + " | colour | direction | shape |",
             "|---|---:|---|---|---|"]
    for r in rows:   # one evaluation per run, at its last step
      name = "native" if r["data.width"] == wide[1] else "square crop"
      lines.append(f"| {name} | {r['wide_framing']:.2f} | " + " | ".join(
          f"{r['wide_' + k]:.2f} ({r['wide_' + k + '_chance']:.2f})"
          for k in ("color", "direction", "shape")) + " |")
    lines.append(f"| held-out clips (reference) | {ref:.2f} | | | |")
    with open(os.path.join(out, "table.md"), "a") as f:
      f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
