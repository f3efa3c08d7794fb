"""Captions of world scenes, short and detailed, with seed-chosen phrasing.

The first sentence always names the primary object's colour, shape and motion (with its
direction), so `sora_jax.eval.worlds.parse_caption` can read them back from either style; later
sentences (detailed style) describe placement, secondary objects, the pillar, the camera and the
background, and never use a palette colour name for anything but an object.
"""
from __future__ import annotations

import numpy as np

from sora_jax.data.world.vocab import Scene, WorldObject

STYLES = ("short", "detailed")
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
}
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "right": ("to the right", "rightward", "toward the right"),
    "left": ("to the left", "leftward", "toward the left"),
    "up": ("upward", "up"),
    "down": ("downward", "down"),
    "clockwise": ("clockwise",),
    "counterclockwise": ("counterclockwise", "anticlockwise"),
}
# (third person, gerund) phrase pairs; {d} is a direction phrase.
MOTION_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "bounce": (("bounces {d}", "bouncing {d}"),
               ("moves {d}, bouncing off the walls", "moving {d} and bouncing off the walls"),
               ("is bouncing {d}", "bouncing {d}")),
    "cross": (("slides {d}", "sliding {d}"), ("glides {d}", "gliding {d}"),
              ("moves {d} across the frame", "moving {d} across the frame")),
    "fall": (("falls and bounces on the ground", "falling and bouncing on the ground"),
             ("drops to the floor", "dropping to the floor"), ("falls down", "falling down")),
    "rotate": (("spins {d}", "spinning {d}"), ("rotates {d} in place", "rotating {d} in place"),
               ("turns {d}", "turning {d}")),
    "grow": (("grows larger", "growing larger"), ("expands", "expanding"),
             ("gets bigger", "getting bigger")),
    "shrink": (("shrinks", "shrinking"), ("gets smaller", "getting smaller"),
               ("contracts", "contracting")),
    "orbit": (("orbits {d}", "orbiting {d}"),
              ("revolves {d} around a point", "revolving {d} around a point")),
}
_SHORT = ("a {subj} {p3}", "a {subj} {pg}", "video of a {subj} {pg}", "the {subj} {p3}")
_DETAIL = {
    "bounce": ("It keeps bouncing off the edges of the frame.",
               "It travels in a straight line and rebounds from the walls."),
    "cross": ("It moves in a straight line and may leave the frame.",
              "It keeps going without turning back."),
    "fall": ("Gravity pulls it down and it bounces a few times before settling.",
             "It hits the bottom and bounces lower each time."),
    "rotate": ("It stays in place while turning.", "Its centre does not move as it spins."),
    "grow": ("It swells to about twice its size.", "It becomes larger and larger."),
    "shrink": ("It shrinks to less than half its size.", "It becomes smaller and smaller."),
    "orbit": ("It follows a circular path.", "It loops around the same point."),
}
# Two-shot clips (worlds '..._shots'), keyed by whether the close-up comes first. The short
# form keeps the single-shot caption's subject and motion in its first clause.
_SHOTS_SHORT = {
    False: ("{text}, then a close-up of the {color} {shape}",
            "{text}; cut to a close-up of the {color} {shape}"),
    True: ("a close-up of a {subj} {pg}, then a wide shot",
           "a close-up of a {subj} {pg}; cut to a wide shot of the {color} {shape}"),
}
_SHOTS_DETAIL = {
    False: ("The camera cuts from a wide view to a close-up of the {color} {shape}.",
            "Two shots: a wide view, then a close-up of the {color} {shape}."),
    True: ("The video opens on a close-up of the {color} {shape} and cuts to a wide view.",
           "Two shots: a close-up of the {color} {shape}, then a wide view."),
}
_BACKGROUND = {
    "gradient": ("a dark gradient backdrop", "a dim, smoothly shaded backdrop"),
    "texture": ("a dark, softly textured backdrop", "a dim mottled background"),
    "checker": ("a dark checkered pattern", "a dim checkerboard backdrop"),
}


def _pick(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def _subject(rng: np.random.Generator, o: WorldObject, with_size: bool) -> str:
  shape = o.shape if rng.random() < 0.7 else _pick(rng, SHAPE_WORDS[o.shape])
  return f"{o.size} {o.color} {shape}" if with_size else f"{o.color} {shape}"


def _phrases(rng: np.random.Generator, o: WorldObject) -> tuple[str, str]:
  p3, pg = _pick(rng, MOTION_PHRASES[o.motion])
  d = _pick(rng, DIRECTION_WORDS[o.direction]) if o.direction else ""
  return p3.format(d=d), pg.format(d=d)


def _where(o: WorldObject) -> str:
  row = "upper" if o.y < 0.4 else "lower" if o.y > 0.6 else "middle"
  col = "left" if o.x < -0.15 else "right" if o.x > 0.15 else "centre"
  if row == "middle" and col == "centre":
    return "the centre of the frame"
  if row == "middle":
    return f"the {col} side of the frame"
  return f"the {row} {col} part of the frame" if col != "centre" else f"the {row} middle"


def caption(scene: Scene, style: str = "short", seed: int = 0) -> str:
  if style not in STYLES:
    raise ValueError(f"caption style {style!r} is not known; use one of {STYLES}")
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, STYLES.index(style),
                               int(scene.seed) & 0xFFFFFFFF, 0xCA9])
  p = scene.objects[0]
  p3, pg = _phrases(rng, p)
  if style == "short":
    text = _pick(rng, _SHORT).format(subj=_subject(rng, p, rng.random() < 0.3), p3=p3, pg=pg)
    if scene.shots:
      close_first = scene.shots[0]["zoom"] > 1.0
      text = _pick(rng, _SHOTS_SHORT[close_first]).format(
          text=text, color=p.color, shape=p.shape, subj=_subject(rng, p, False), pg=pg)
    return text
  # "It" must follow the primary's sentence directly; the other sentences come in any order.
  first = [f"A {_subject(rng, p, True)} {p3}.", f"It starts near {_where(p)}.",
           _pick(rng, _DETAIL[p.motion])]
  rest = []
  for o in scene.objects[1:]:
    q3, _ = _phrases(rng, o)
    rest.append(_pick(rng, ("There is also a {s} that {p}.", "A {s} {p} nearby.",
                            "In the background, a {s} {p}."))
                .format(s=_subject(rng, o, True), p=q3))
  if scene.occluder is not None:
    side = ("left of centre" if scene.occluder["x"] < -0.1 else
            "right of centre" if scene.occluder["x"] > 0.1 else "near the centre")
    pillar = _pick(rng, ("A grey pillar stands {side}", "A tall grey bar sits {side}"))
    rest.append(pillar.format(side=side) + _pick(
        rng, ("; objects pass behind it and reappear.", ", hiding whatever passes behind it.")))
  if scene.pan:
    way = "right" if scene.pan > 0 else "left"
    rest.append(_pick(rng, (f"The camera pans slowly to the {way}.",
                            f"The view drifts gently {way}ward.")))
  if scene.shots:
    rest.append(_pick(rng, _SHOTS_DETAIL[scene.shots[0]["zoom"] > 1.0])
                .format(color=p.color, shape=p.shape))
  rest.append(_pick(rng, ("The scene is set against {b}.", "Behind everything is {b}."))
              .format(b=_pick(rng, _BACKGROUND[scene.background["kind"]])))
  order = rng.permutation(len(rest))
  return " ".join(first + [rest[i] for i in order])
