"""Counterfactual captions change exactly one attribute of the primary object, as the world
evaluator reads it back, on every caption style the world writes."""
import numpy as np
import pytest

from sora_jax.data import world as w
from sora_jax.eval import counterfactual as cf
from sora_jax.eval import worlds as ev

_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up",
             "clockwise": "counterclockwise", "counterclockwise": "clockwise"}


def test_swaps_change_one_attribute_of_generated_captions():
  swapped_directions = 0
  for seed in range(80):
    s = w.sample_scene(seed, "test_compositional" if seed % 3 == 0 else "train")
    for style in ("short", "detailed"):
      text = w.caption(s, style, seed)
      before = ev.parse_caption(text)
      for attr in cf.ATTRIBUTES:
        after = ev.parse_caption(cf.swap(text, attr))
        others = {k: v for k, v in before.items() if k not in (attr, "motion")}
        assert {k: after[k] for k in others} == others, (text, attr)
        assert after["motion"] == before["motion"], (text, attr)
        if attr == "direction":
          if before["motion"] in ("fall", "grow", "shrink"):   # the verb fixes it: unchanged
            assert after == before, text
          else:
            assert after["direction"] == _OPPOSITE[before["direction"]], text
            swapped_directions += 1
        else:
          assert after[attr] not in (None, before[attr]), (text, attr)
      # Later sentences (placement, backdrop) are left as they were.
      assert cf.swap(text, "direction").split(". ")[1:] == text.split(". ")[1:]
  assert swapped_directions > 40


@pytest.mark.parametrize("text,attr,want", [
    ("a red circle bounces to the right", "direction", "a red circle bounces to the left"),
    ("The orange box spins anticlockwise", "direction", "The orange box spins clockwise"),
    ("Yellow star moves upward. It starts near the right side.", "color",
     "Magenta star moves upward. It starts near the right side."),
    ("a white ball grows", "shape", "a white square grows"),
    ("a sunset over the sea", "color", "a sunset over the sea"),
])
def test_swap_examples(text, attr, want):
  assert cf.swap(text, attr) == want


def test_loss_report_averages_each_swap_over_the_clips_it_changed():
  names = ["true", "null", *cf.ATTRIBUTES]
  tokens = np.zeros((5, 4, 3), np.int32)
  tokens[2] += 1          # colour: every clip's caption changed
  tokens[4, :2, 1] += 1   # direction: clips 0-1 only; shape: none
  losses = np.ones((5, len(cf.T_GRID), 4))
  losses[1] *= 2.0
  losses[2] *= 3.0
  losses[4][:, :2], losses[4][:, 2:] = 1.5, 9.0   # unchanged clips must not count
  r = cf.loss_report(names, tokens, losses)
  assert r["flow_loss"] == 1.0 and r["flow_loss_t0.5"] == 1.0
  assert r["text_gain_pct"] == pytest.approx(50.0)
  assert r["color_gain_pct"] == pytest.approx(200.0)
  assert r["direction_gain_pct"] == pytest.approx(50.0)
  assert "shape_gain_pct" not in r


def test_caption_losses_of_a_model(t2v_tiny):
  from sora_jax.eval import t2v_eval
  r = t2v_eval.caption_losses(t2v_tiny, "test", 4)
  assert {"flow_loss", "text_gain_pct", "color_gain_pct", "shape_gain_pct"} <= set(r)
  assert all(np.isfinite(v) for v in r.values())
  # A perturbed untrained model's captions move its loss (the text reaches the output).
  assert r["color_gain_pct"] != 0.0


def test_ideal_costs_of_a_word_that_decides_the_clip_and_of_one_that_does_not():
  rng = np.random.default_rng(0)
  caps, lat = [], []
  for i in range(400):
    d, color = ("right", "left")[i % 2], ("red", "green")[(i // 2) % 2]
    caps.append(f"a {color} circle bounces to the {d}")
    lat.append((1.0 if d == "right" else -1.0) + rng.normal(size=(2, 3)))   # colour: no effect
  r = cf.ideal_costs(np.stack(lat), caps, "direction")
  # Knowing the sign removes the mean's variance (1 of 2); the opposite word's mean costs 4 x 1.
  assert r["clips"] == 400
  assert r["gain_pct"] == pytest.approx(100.0, rel=0.1)
  assert r["swap_pct"] == pytest.approx(400.0, rel=0.1)
  # red -> green (the next palette colour) is worth nothing here; green -> blue has no group.
  r = cf.ideal_costs(np.stack(lat), caps, "color")
  assert r["clips"] == 200
  assert abs(r["gain_pct"]) < 3.0 and abs(r["swap_pct"]) < 3.0


def test_ideal_loss_falls_as_the_caption_explains_more():
  rng = np.random.default_rng(1)
  caps = [f"a red circle bounces to the {('right', 'left')[i % 2]}" for i in range(200)]
  lat = np.stack([(1.0 if i % 2 == 0 else -1.0) + rng.normal(size=(4,)) for i in range(200)])
  none, known = cf.ideal_loss(lat, caps, ()), cf.ideal_loss(lat, caps, ("direction",))
  assert none == pytest.approx(2.0, rel=0.15) and known == pytest.approx(1.0, rel=0.15)
