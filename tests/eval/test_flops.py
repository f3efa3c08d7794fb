import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dit_paper
from sora_jax.eval import flops
from sora_jax.models import dit

TINY = dict(variant="Mu", width=64, depth=2, heads=2, patch=(1, 2, 2), mlp="swiglu")


def test_dit_xl2_formula_matches_paper():
  c = dit_paper.get_config("variant=XL/2")
  macs = flops.forward_macs_formula(c.model, 256, in_channels=4)
  assert abs(macs / 1e9 - 118.6) < 0.2  # the paper's Table 1 "Gflops" (MACs) of DiT-XL/2
  # Patch 4 has 4x fewer tokens: roughly 4x fewer MACs (the paper: 29.05).
  c4 = dit_paper.get_config("variant=XL/4")
  assert abs(flops.forward_macs_formula(c4.model, 64, in_channels=4) / 1e9 - 29.05) < 0.3


def test_forward_macs_xla_counts_a_matmul():
  a, b = jax.ShapeDtypeStruct((32, 48), jnp.float32), jax.ShapeDtypeStruct((48, 16), jnp.float32)
  assert flops.forward_macs_xla(jnp.matmul, a, b) == pytest.approx(32 * 48 * 16, rel=0.01)


def test_count_params_boxed_and_plain():
  model = dit.dit_from_config(TINY, in_channels=4, text_width=16)
  args, kwargs = flops._inputs(model, (2, 8, 8, 4), 8, 16)
  shapes = flops._abstract_init(model, args, kwargs)["params"]
  plain = jax.tree.leaves(jax.tree.map(lambda s: np.zeros(s.shape), nn.unbox(shapes)))
  assert flops.count_params(shapes) == sum(x.size for x in plain) > 0


def test_xla_agrees_with_formula_and_extrapolation_is_exact():
  """2 x 8 x 8 x 4 latents, patch 1x2x2: 32 tokens, 8 text tokens, width 64."""
  model = dit.dit_from_config(TINY, in_channels=4, text_width=16)
  latent, ctx, tw = (2, 8, 8, 4), 8, 16
  xla = flops.model_macs_xla(dataclasses.replace(model, depth=3), latent, ctx, tw)
  # Direct count of an unrolled depth-3 model equals the depth-1/2 extrapolation.
  m3 = dataclasses.replace(model, depth=3, scan_layers=False, remat_policy="none")
  args, kwargs = flops._inputs(m3, latent, ctx, tw)
  v = flops._abstract_init(m3, args, kwargs)
  direct = flops.forward_macs_xla(
      lambda v, x, t, c, cm: m3.apply(v, x, t, context=c, context_mask=cm),
      v, *args, *kwargs.values())
  assert xla == pytest.approx(direct, rel=1e-6)
  cfg = dict(TINY, depth=3)
  formula = flops.forward_macs_formula(cfg, 32, ctx, in_channels=4, text_width=tw)
  assert abs(xla - formula) / formula < 0.10, (xla, formula)


def test_layout_readout_macs_formula_matches_xla():
  """The position-query cross-attention is counted once (it sits before the blocks)."""
  latent, ctx, tw = (2, 8, 8, 4), 8, 16
  cfg, on = dict(TINY, depth=2), dict(TINY, depth=2, layout_readout=True)
  xla = [flops.model_macs_xla(dit.dit_from_config(c, in_channels=4, text_width=tw), latent, ctx,
                              tw) for c in (cfg, on)]
  formula = [flops.forward_macs_formula(c, 32, ctx, in_channels=4, text_width=tw)
             for c in (cfg, on)]
  added_xla, added_formula = xla[1] - xla[0], formula[1] - formula[0]
  assert added_formula > 0 and abs(added_xla - added_formula) / added_formula < 0.10


def test_flops_report_rows():
  rows = flops.flops_report(dit_paper.get_config("runlocal"))
  (row,) = rows
  assert row["model"] == "DiT-Mu/1x2x2" and row["latent"] == (1, 8, 8, 4)
  assert row["tokens"] == 16 and row["params"] > 0
  assert abs(row["gmacs_xla"] - row["gmacs_formula"]) / row["gmacs_formula"] < 0.10
