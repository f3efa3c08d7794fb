"""Diffusion transformer over spacetime latent patches (DiT with adaLN-zero, RoPE-3D, text x-attn).

Two modes share one module:
  * text-to-video (cond='text'): RoPE-3D + QK-norm self-attention over all spacetime tokens,
    zero-initialised cross-attention to text, SwiGLU MLP; `layout_readout` adds one more
    cross-attention before the blocks whose queries are positions alone (where-words);
  * DiT paper (cond='class', pos='sincos', mlp='gelu', qk_norm=False, out_channels=2C): the
    class-conditional image model of Peebles & Xie, with the reference parameter layout.

Timesteps may be per sample [B] or per latent frame [B, T]; in the latter case the adaLN
modulation is per token, taken from its frame's t (image-to-video, extension, looping).

Packed rows (NaViT; `sora_jax.data.packing`): with `segment_ids` the input is already patchified,
x [B, N, pt*ph*pw*C] holding several clips of any size side by side, with their (t, h, w) token
`positions` [B, N, 3], t per clip [B, S] (clip s has segment id s + 1; 0 = padding) or per
clip and token frame [B, S, F] (frame conditioning of packed clips), and the clips' captions
concatenated in `context` [B, S*L, Dc] with `context_segment_ids`. Tokens attend only within
their clip, read only their clip's caption, and are modulated by their group's t and their clip's
pooled caption — computed once per (clip, frame) group, then spread to its tokens (a per-token
adaLN projection would cost as much as the MLP); the output stays packed.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.config_geometry import parse_out_conv
from sora_jax.models import layers as L
from sora_jax.models import patching
from sora_jax.models.discriminator import TimeStackedConv

# name: (width, depth, heads). S/B/L/XL are the DiT paper's; Ti and Mu are for CPU and tests.
VARIANTS = {
    "Mu": (64, 2, 2),
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}

REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def remat_policy_for_backend(policy: str, backend: str | None = None) -> str:
  """`auto` as the backend it runs on: keep the matmuls on a CPU, recompute them on accelerators.

  On XLA:CPU memory is plentiful and every recomputed matmul is paid in full on two cores:
  keeping the projections' outputs (not attention's batched scores) trains DiT-S/2 17 % and B/2
  32 % faster than nothing_saveable, for 15 % more peak memory (benchmarks/RESULTS.md). On a GPU
  or TPU the budget is memory, so `auto` keeps the policy that fits the largest model and batch.
  """
  if policy != "auto":
    return policy
  if (backend or jax.default_backend()) == "cpu":
    return "dots_with_no_batch_dims_saveable"
  return "nothing_saveable"


def decode_variant(variant: str) -> dict:
  """'S/1x2x2' -> dict(width=384, depth=12, heads=6, patch=(1, 2, 2)); 'B/2' -> patch (1, 2, 2)."""
  m = re.fullmatch(r"\s*([A-Za-z]+)\s*(?:/\s*([0-9x]+))?\s*", str(variant))
  if not m or m.group(1) not in VARIANTS:
    raise ValueError(f"model.variant {variant!r} is not known; use one of "
                     f"{', '.join(VARIANTS)} optionally with a patch, e.g. 'S/1x2x2' or 'XL/2'")
  width, depth, heads = VARIANTS[m.group(1)]
  out = dict(width=width, depth=depth, heads=heads)
  if m.group(2):
    parts = m.group(2).split("x")
    if len(parts) == 1:
      out["patch"] = (1, int(parts[0]), int(parts[0]))
    elif len(parts) == 3 and all(parts):
      out["patch"] = tuple(int(p) for p in parts)
    else:
      raise ValueError(f"model.variant {variant!r}: patch must be P or TxHxW, e.g. /2 or /1x2x2")
  return out


def packed_groups(segment_ids, positions, t_shape) -> jax.Array:
  """One-hot [B, N, S*F] of each packed token's conditioning group: its clip (segment id - 1),
  and with t per (clip, token frame) [B, S, F], its frame (positions[..., 0], capped at F - 1);
  all zero for padding (segment id 0)."""
  s = t_shape[0]
  f = t_shape[1] if len(t_shape) > 1 else 1
  frame = jnp.minimum(positions[..., 0], f - 1) if f > 1 else 0
  group = jnp.where(segment_ids > 0, (segment_ids - 1) * f + frame, -1)
  return group[..., None] == jnp.arange(s * f)


def _to_tokens(mods, per_group):
  """Per-group modulation [B, G, D] -> per token [B, N, D] through the one-hot [B, N, G] of each
  token's group (a matmul: its backward is a matmul too, not a scatter); unpacked: unchanged."""
  if per_group is None:
    return mods
  return [jnp.einsum("bns,bsd->bnd", per_group, m.astype(per_group.dtype)).astype(m.dtype)
          for m in mods]


class Block(nn.Module):
  """adaLN-zero block: modulated self-attn, (text cross-attn), modulated MLP. Scan-shaped."""
  heads: int
  mlp: str = "swiglu"
  mlp_ratio: float = 4.0
  qk_norm: bool = True
  use_bias: bool = True
  cross_attention: bool = False
  attention_impl: str = "xla"
  max_segments: int | None = None   # packed rows: clips + padding (cuDNN's packed layout)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c, rope, context, context_mask, segments=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    seg, ctx_seg, per_group = segments if segments is not None else (None, None, None)
    x = L.constrain(x, L.ACT_TOKENS)
    sh1, sc1, g1, sh2, sc2, g2 = _to_tokens(L.AdaLNModulation(6, name="adaLN", **kw)(c),
                                            per_group)
    h = L.modulate(L.LayerNorm(affine=False, name="norm1", **kw)(x), sh1, sc1)
    h = L.Attention(self.heads, qk_norm=self.qk_norm, use_bias=self.use_bias,
                    impl=self.attention_impl, max_segments=self.max_segments, name="attn",
                    **kw)(h, rope, seg)
    x = x + L.gate(h, g1)
    if self.cross_attention:
      h = L.LayerNorm(affine=True, name="norm_cross", **kw)(x)
      x = x + L.CrossAttention(self.heads, qk_norm=self.qk_norm, impl=self.attention_impl,
                               max_segments=self.max_segments, name="cross_attn", **kw)(
                                   h, context, context_mask, seg, ctx_seg)
    h = L.modulate(L.LayerNorm(affine=False, name="norm2", **kw)(x), sh2, sc2)
    h = L.MLP(self.mlp, self.mlp_ratio, name="mlp", **kw)(h)
    x = L.constrain(x + L.gate(h, g2), L.ACT_TOKENS)
    return x, None


class DiT(nn.Module):
  """x [B, T, H, W, C] latents, t [B] or [B, T] in [0, 1] -> [B, T, H, W, out_channels]."""
  width: int
  depth: int
  heads: int
  patch: Sequence[int] = (1, 2, 2)
  in_channels: int = 8
  out_channels: int | None = None
  mlp: str = "swiglu"
  mlp_ratio: float = 4.0
  qk_norm: bool = True
  pos: str = "rope3d"
  rope_theta: float = 10000.0
  cond: str = "text"
  num_classes: int = 0
  text_width: int | None = None
  layout_readout: bool = False
  layout_prior: bool = False
  # (kt, kh, kw) of a zero-initialised residual convolution on the unpatchified output, so
  # neighbouring tokens' patches can agree on an edge (U-ViT's final 3x3 conv); () = none.
  out_conv: tuple[int, ...] = ()
  remat_policy: str = "auto"
  scan_layers: bool = True
  attention_impl: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _check(self, x, t, context, labels):
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(f"DiT expects latents [batch, frames, height, width, {self.in_channels}], "
                       f"got {tuple(x.shape)}")
    if t.ndim not in (1, 2) or t.shape[0] != x.shape[0] or (t.ndim == 2 and
                                                            t.shape[1] != x.shape[1]):
      raise ValueError(f"t must be [batch] or [batch, latent_frames] = [{x.shape[0]}] or "
                       f"[{x.shape[0]}, {x.shape[1]}], got {tuple(t.shape)}")
    if self.cond == "text" and context is None:
      raise ValueError("cond='text' needs context (text embeddings [B, L, D]) and context_mask")
    if self.cond == "class" and labels is None:
      raise ValueError("cond='class' needs integer labels [B] (num_classes = the null class)")
    if self.cond not in ("text", "class"):
      raise ValueError(f"model.cond must be 'text' or 'class', got {self.cond!r}")
    if self.pos not in ("rope3d", "sincos", "rope3d+abs"):
      raise ValueError(f"model.pos must be 'rope3d', 'sincos' or 'rope3d+abs', got {self.pos!r}")

  def _check_packed(self, x, t, positions, segment_ids, context, context_segment_ids):
    pdim = self.patch[0] * self.patch[1] * self.patch[2] * self.in_channels
    b, n = segment_ids.shape[:2] if segment_ids.ndim == 2 else (None, None)
    if t.ndim not in (2, 3):
      raise ValueError(f"packed DiT input t must be per clip [B, S] or per clip and token frame "
                       f"[B, S, F]; got {tuple(t.shape)}")
    want = {"x": (x.shape, (b, n, pdim)), "t": (t.shape, (b, *t.shape[1:])),
            "positions": (None if positions is None else positions.shape, (b, n, 3))}
    for name, (got, shape) in want.items():
      if got != shape:
        raise ValueError(f"packed DiT input {name} must be {shape} for segment_ids [{b}, {n}] and "
                         f"patch {tuple(self.patch)} x {self.in_channels} channels; got {got}")
    if self.cond != "text" or not self.pos.startswith("rope3d"):
      raise ValueError("packed sequences need model.cond='text' and model.pos='rope3d' or "
                       "'rope3d+abs' (positions come per token; a sin-cos table needs one grid)")
    if context is None or context_segment_ids is None:
      raise ValueError("packed sequences need context and context_segment_ids (each caption "
                       "token's clip)")

  @nn.compact
  def __call__(self, x, t, *, context=None, context_mask=None, labels=None, train: bool = False,
               segment_ids=None, positions=None, context_segment_ids=None,
               layout_prior_only: bool = False):
    """layout_prior_only: return the layout prior (the caption's expected clean clip, shaped
    like x) instead of the flow output; t and x's values are then unused."""
    del train  # no dropout; class / caption dropout for CFG happens in the train step
    if self.layout_prior and not (self.layout_readout and self.cond == "text"):
      raise ValueError("model.layout_prior reads what model.layout_readout reads: set "
                       "model.layout_readout=True (and model.cond='text')")
    if layout_prior_only and not self.layout_prior:
      raise ValueError("layout_prior_only needs model.layout_prior=True")
    t = jnp.asarray(t, jnp.float32)
    packed = segment_ids is not None
    if packed:
      self._check_packed(x, t, positions, segment_ids, context, context_segment_ids)
    else:
      self._check(x, t, context, labels)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out_ch = self.out_channels or self.in_channels
    b = x.shape[0]

    if packed:
      tokens, grid, pos = x, None, positions
    else:
      tokens, grid = patching.patchify(x, self.patch)
      pos = patching.grid_positions(grid)[None]
    h = L.Dense(self.width, ("patch", "embed"), name="patch_embed", **kw)(tokens)
    rope = None
    if self.pos == "sincos":
      h = h + jnp.asarray(L.sincos_3d(self.width, grid), self.dtype)[None]
    else:
      rope = L.rope_3d(pos, self.width // self.heads, theta=self.rope_theta)
      if self.pos == "rope3d+abs":
        # Rotary attention sees only offsets; with a pure-noise input at t ~ 1 nothing then
        # says where a token is, so the caption's layout ("starts left, moves right") cannot
        # be drawn. Absolute sin-cos of (t, h, w) gives each token its place.
        h = h + L.sincos_positions(self.width, pos).astype(self.dtype)
    h = L.constrain(h, L.ACT_TOKENS)

    # Conditioning groups: one per sample, per token frame (mean over the temporal patch), or,
    # packed, one per clip or (clip, frame) (spread to its tokens in each block by `per_group`).
    per_group, n_clips = None, 0
    if packed:
      n_clips = t.shape[1]
      per_group = packed_groups(segment_ids, positions, t.shape[1:]).astype(self.dtype)
      t = t.reshape(b, -1)                              # [B, S*F] groups, clip-major
    else:
      t = t.reshape(b, grid[0], self.patch[0]).mean(-1) if t.ndim == 2 else t[:, None]
    c = L.TimestepEmbedder(self.width, name="t_embed", **kw)(t)  # [B, G, D], G in {1, nt, N}

    if self.cond == "class":
      table = self.param("label_embed", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), ("classes", "embed")),
                         (self.num_classes + 1, self.width), self.param_dtype)
      c = c + jnp.take(table, labels, axis=0).astype(self.dtype)[:, None]
      context = context_mask = None
    else:
      if context_mask is None:
        context_mask = jnp.ones(context.shape[:2], bool)
      context_mask = context_mask.astype(bool)
      ctx = L.Dense(self.width, (None, "embed"), name="text_proj1", **kw)(context)
      ctx = L.Dense(self.width, ("mlp", "embed"), name="text_proj2", **kw)(
          nn.gelu(ctx, approximate=True))
      if packed:   # each clip pools its own caption: [B, S, L] weights
        clips = jnp.arange(1, n_clips + 1)
        m = jnp.logical_and(clips[None, :, None] == context_segment_ids[:, None, :],
                            context_mask[:, None, :]).astype(ctx.dtype)
        pooled = jnp.einsum("bsl,bld->bsd", m, ctx) / jnp.maximum(m.sum(-1, keepdims=True), 1.0)
        pooled = jnp.repeat(pooled, t.shape[1] // n_clips, axis=1)   # to (clip, frame)
      else:
        m = context_mask[..., None].astype(ctx.dtype)
        pooled = ((ctx * m).sum(1) / jnp.maximum(m.sum(1), 1.0))[:, None]
      c = c + L.Dense(self.width, ("mlp", "embed"), name="text_pool", **kw)(pooled)
      context = L.constrain(ctx, ("act_batch", None, "act_embed"))
      if self.layout_readout:
        # At t ~ 1 a token's content is noise, so what a caption says about *where* ("starts
        # near the left side", "moves to the right") has no query to answer it: the blocks'
        # cross-attention asks from content. Here each place asks from its position alone
        # (sin-cos of t, h, w through a learned projection, so any size and packing work),
        # and what it reads is added to the token before the blocks (zero-initialised).
        pq = L.Dense(self.width, (None, "embed"), name="layout_query", **kw)(
            L.sincos_positions(self.width, pos).astype(self.dtype))
        pq = jnp.broadcast_to(pq, h.shape)
        read = L.CrossAttention(self.heads, qk_norm=self.qk_norm, impl=self.attention_impl,
                                max_segments=n_clips + 1 if packed else None,
                                name="layout_readout", **kw)(
            pq, context, context_mask, segment_ids if packed else None,
            context_segment_ids if packed else None)
        if self.layout_prior and (layout_prior_only or self.is_initializing()):
          # What each place read, mapped linearly to the clean clip's patch there: trained
          # towards the clip at every t by its own loss (T2VSystem.loss), so the caption's
          # layout is learnt from every example, not only the ~1 % drawn at t ~ 1 where the
          # flow loss pays for it (RESULTS.md issue 13, session 27).
          prior = L.Dense(tokens.shape[-1], ("embed", "patch"), name="layout_prior", **kw)(read)
          if layout_prior_only:
            return prior if packed else patching.unpatchify(prior, grid, self.patch,
                                                            self.in_channels)
        h = h + read

    segments = (segment_ids, context_segment_ids, per_group) if packed else None
    block_kw = dict(heads=self.heads, mlp=self.mlp, mlp_ratio=self.mlp_ratio,
                    qk_norm=self.qk_norm, cross_attention=self.cond == "text",
                    attention_impl=self.attention_impl,
                    max_segments=n_clips + 1 if packed else None, **kw)
    block = Block
    policy = remat_policy_for_backend(self.remat_policy)
    if policy != "none":
      if policy not in REMAT_POLICIES:
        raise ValueError(f"model.remat_policy {self.remat_policy!r} is not one of "
                         f"{', '.join(['auto', 'none', *REMAT_POLICIES])}")
      block = nn.remat(Block, policy=REMAT_POLICIES[policy],
                       prevent_cse=not self.scan_layers)
    if self.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast,) * 5, length=self.depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      h, _ = stack(name="blocks", **block_kw)(h, c, rope, context, context_mask, segments)
    else:
      for i in range(self.depth):
        h, _ = block(name=f"blocks_{i}", **block_kw)(h, c, rope, context, context_mask, segments)

    shift, scale = _to_tokens(L.AdaLNModulation(2, name="final_adaLN", **kw)(c), per_group)
    h = L.modulate(L.LayerNorm(affine=False, name="final_norm", **kw)(h), shift, scale)
    pdim = self.patch[0] * self.patch[1] * self.patch[2] * out_ch
    h = L.Dense(pdim, ("embed", "patch"), kernel_init=nn.initializers.zeros_init(),
                name="final_proj", **kw)(h)
    if packed:
      if self.out_conv:
        raise ValueError("model.out_conv needs each clip's grid; packed rows have none")
      return h
    out = patching.unpatchify(h, grid, self.patch, out_ch)
    if self.out_conv:
      out = out + TimeStackedConv(out_ch, tuple(self.out_conv), (1, 1),
                                  kernel_init=nn.initializers.zeros_init(), name="out_conv",
                                  **kw)(out)
    return out


def _get(cfg, key, default):
  try:
    v = cfg.get(key, default)
  except AttributeError:
    v = getattr(cfg, key, default)
  return default if v is None else v


def _dtype(v):
  return jnp.dtype(v) if isinstance(v, str) else v


def resolve_model_config(model_cfg) -> dict:
  """The model section with `variant` expanded: width/depth/heads (0 = from variant), patch."""
  variant = decode_variant(_get(model_cfg, "variant", "S"))
  out = {}
  for k in ("width", "depth", "heads"):
    v = int(_get(model_cfg, k, 0))
    out[k] = v if v > 0 else variant[k]
  patch = _get(model_cfg, "patch", None) or variant.get("patch", (1, 2, 2))
  if isinstance(patch, str):
    patch = decode_variant(f"S/{patch}")["patch"]
  out["patch"] = tuple(int(p) for p in patch)
  if out["width"] % out["heads"]:
    raise ValueError(f"model.width {out['width']} is not divisible by model.heads {out['heads']}")
  defaults = dict(mlp="swiglu", mlp_ratio=4.0, qk_norm=True, pos="rope3d", cond="text",
                  num_classes=0, remat_policy="auto", scan_layers=True,
                  attention_impl="xla", dtype="float32", param_dtype="float32", out_channels=0,
                  learn_sigma=False, rope_theta=10000.0, layout_readout=False,
                  layout_prior=False)
  for k, d in defaults.items():
    out[k] = _get(model_cfg, k, d)
  out["out_conv"] = parse_out_conv(_get(model_cfg, "out_conv", ""))
  return out


def dit_from_config(model_cfg, *, in_channels: int, text_width: int | None = None) -> DiT:
  """The DiT of a config's model section; learn_sigma doubles the output channels."""
  r = resolve_model_config(model_cfg)
  out_channels = int(r["out_channels"]) or (2 * in_channels if r["learn_sigma"] else None)
  return DiT(width=r["width"], depth=r["depth"], heads=r["heads"], patch=r["patch"],
             in_channels=in_channels, out_channels=out_channels,
             mlp=r["mlp"], mlp_ratio=float(r["mlp_ratio"]), qk_norm=bool(r["qk_norm"]),
             pos=r["pos"], rope_theta=float(r["rope_theta"]), cond=r["cond"],
             num_classes=int(r["num_classes"]), text_width=text_width,
             layout_readout=bool(r["layout_readout"]), layout_prior=bool(r["layout_prior"]),
             out_conv=r["out_conv"],
             remat_policy=r["remat_policy"], scan_layers=bool(r["scan_layers"]),
             attention_impl=r["attention_impl"], dtype=_dtype(r["dtype"]),
             param_dtype=_dtype(r["param_dtype"]))
