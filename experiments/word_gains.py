"""Study: the training loop's loss report (flow loss, text and word gains) over many held-out
clips, with its spread over groups of the loop's size, for one run or several on the same clips.

A 16-clip word gain moves by ~1 % with the clips (RESULTS.md, issue 13, session 46), so two runs
whose in-loop figures differ by less cannot be told apart from them. This reads the first --num
clips of each run's held-out split (data.eval_split, short captions: the loop's clips, more of
them), the same noise for every run, and prints each figure over all clips, its mean and sd over
groups of --group clips, and for every run after the first its paired difference from the first
run, group by group. (In a training run, train.eval_loss_num does the first of these in the loop.)

  python experiments/word_gains.py --workdir=W1/t2v,W2/t2v [--num=128] [--group=16] \\
      [--out=results/word_gains]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _plots import write_table  # noqa: E402

from sora_jax import runs  # noqa: E402
from sora_jax.eval import counterfactual as cf  # noqa: E402
from sora_jax.systems.vae import to_model_range  # noqa: E402
from sora_jax.train import setup as setup_lib  # noqa: E402

KEYS = ("flow_loss", "text_gain_pct", "color_gain_pct", "shape_gain_pct", "direction_gain_pct")


def losses_on(system, params, config, num: int, chunk: int
              ) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(captionings' names, tokens [K, B, L], per-clip losses [K, T, B]) of a model on the first
  `num` clips of its config's held-out split, encoded `chunk` at a time."""
  held = setup_lib.held_out(config, num)
  if held is None or len(held["caption"]) < num:
    raise SystemExit(f"the held-out split ({config.data.eval_split}) gave fewer than "
                     f"--num={num} clips")
  captions = [str(c) for c in held["caption"]]
  encode = jax.jit(system.encode)
  latents = cf.encode_in_chunks(lambda v: encode(jnp.asarray(to_model_range(v))), held["video"],
                                chunk)
  names, tokens, masks = cf.captionings(system, captions, world=True)
  losses = jax.jit(cf.held_out_losses(system))(params, jnp.asarray(latents), jnp.asarray(tokens),
                                               jnp.asarray(masks), jax.random.key(0))
  return names, tokens, np.asarray(losses)


def group_reports(names, tokens, losses, group: int) -> list[dict[str, float]]:
  b = losses.shape[-1]
  return [cf.loss_report(names, tokens[:, i:i + group], losses[..., i:i + group])
          for i in range(0, b - group + 1, group)]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True, help="t2v runs or exports, comma-separated")
  ap.add_argument("--num", type=int, default=128, help="held-out clips")
  ap.add_argument("--group", type=int, default=16, help="clips per group (the loop's eval_num)")
  ap.add_argument("--out", default="results/word_gains")
  a = ap.parse_args()
  if a.num < 2 * a.group or a.num % a.group:
    raise SystemExit(f"--num={a.num} must be a multiple of --group={a.group}, at least two groups")
  os.makedirs(a.out, exist_ok=True)
  result, rows, first = {}, [], None
  for wd in a.workdir.split(","):
    system, params = runs.open_t2v(wd, use_ema=True)
    names, tokens, losses = losses_on(system, params, runs.load_config(wd, kind="t2v"), a.num,
                                      a.group)
    whole = cf.loss_report(names, tokens, losses)
    groups = group_reports(names, tokens, losses, a.group)
    result[wd] = {"all": whole, "groups": groups}
    row = {"run": wd}
    for k in KEYS:
      v = np.array([g.get(k, np.nan) for g in groups])
      row[k] = f"{whole.get(k, np.nan):.3g} ({np.nanmean(v):.3g} ± {np.nanstd(v, ddof=1):.2g})"
      if first is not None:
        d = v - np.array([g.get(k, np.nan) for g in first])
        row[k] += f"; vs first {np.nanmean(d):+.3g} ± {np.nanstd(d, ddof=1):.2g}"
    first = groups if first is None else first
    rows.append(row)
  md = (f"{a.num} held-out clips: each figure over all of them (mean ± sd over groups of "
        f"{a.group}; for later runs, the paired difference from the first, group by group)\n\n"
        "| run | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS) + "\n"
        + "".join("| " + " | ".join(r[k] for k in ("run", *KEYS)) + " |\n" for r in rows))
  write_table(a.out, {"num": a.num, "group": a.group, "runs": result}, md)


if __name__ == "__main__":
  main()
