"""T5 encoder in Flax Linen, loaded from local HuggingFace-style files (no download).

Architecture (Raffel et al. 2020; v1.1 = gated-GELU FF, no dropout/bias anywhere):
  x = embed(tokens)                                   (no sqrt(d) scaling)
  per block:  x += Attn(RMSNorm(x)) ; x += FF(RMSNorm(x))
  out = RMSNorm(x)
RMSNorm has a scale and no bias or mean subtraction; attention logits are NOT scaled by
1/sqrt(d_kv) (folded into T5's init) and get a learned relative-position bias, computed from
bucketed (key - query) offsets by the first layer's table and shared by all layers.
`feed_forward_proj`: 'gated-gelu' (v1.1, GELU tanh approximation = HF 'gelu_new') or 'relu'
(the original T5). Outputs at padded positions are returned as computed (like HF); mask them.

Weights: `load_t5_encoder(dir)` reads `config.json` plus `model.safetensors` (or a sharded
`model.safetensors.index.json`, torch names such as `encoder.block.0.layer.0.SelfAttention.q.weight`,
Linear weights [out, in]) or `flax_model.msgpack` (HF Flax names, kernels [in, out]; or a tree
saved from this module with `flax.serialization.to_bytes`). Decoder weights are ignored.
`check_t5_dir(dir)` checks up front that a directory also has T5's SentencePiece `spiece.model`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


@dataclasses.dataclass(frozen=True)
class T5Config:
  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 1024
  num_layers: int = 8
  num_heads: int = 6
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"

  @property
  def gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    act = self.feed_forward_proj.split("-")[-1]
    return "gelu_new" if self.gated and act == "gelu" else act   # HF's mapping for gated-gelu


_ACTS = {"relu": jax.nn.relu, "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
         "gelu": lambda x: jax.nn.gelu(x, approximate=False), "silu": jax.nn.silu}


def t5_config_from_json(path_or_dict) -> T5Config:
  """T5Config from a HF `config.json` path (or its parsed dict); unknown keys are ignored."""
  if isinstance(path_or_dict, (str, os.PathLike)):
    with open(path_or_dict) as f:
      d = json.load(f)
  else:
    d = dict(path_or_dict)
  fields = {f.name for f in dataclasses.fields(T5Config)}
  cfg = T5Config(**{k: v for k, v in d.items() if k in fields})
  if cfg.activation not in _ACTS:
    raise ValueError(f"config.json feed_forward_proj={cfg.feed_forward_proj!r}: activation "
                     f"{cfg.activation!r} is not one of {sorted(_ACTS)}")
  return cfg


def relative_position_bucket(relative_position, num_buckets: int = 32, max_distance: int = 128):
  """Bidirectional T5 buckets of (key - query) offsets: half the buckets per direction, the
  first half of each exact, the rest log-spaced up to max_distance (then clipped)."""
  num_buckets //= 2
  ret = (relative_position > 0).astype(jnp.int32) * num_buckets
  n = jnp.abs(relative_position)
  max_exact = num_buckets // 2
  large = max_exact + (jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
                       / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return ret + jnp.where(n < max_exact, n, large)


class RMSNorm(nn.Module):
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), -1, keepdims=True) + self.eps)
    return (jnp.asarray(scale, self.dtype) * xf.astype(self.dtype))


class T5Block(nn.Module):
  cfg: T5Config
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, bias, mask):
    c, init = self.cfg, nn.initializers.normal(0.05)
    dense = lambda feat, names, name, axis=-1: nn.DenseGeneral(
        feat, axis=axis, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(init, names), name=name)
    h = RMSNorm(c.layer_norm_epsilon, self.dtype, self.param_dtype, name="attn_norm")(x)
    qkv = [dense((c.num_heads, c.d_kv), ("embed", "heads", "kv"), n)(h) for n in "qkv"]
    qkv = [nn.with_logical_constraint(a, ("act_batch", "act_seq", "act_heads", "act_kv"))
           for a in qkv]
    a = jax.nn.dot_product_attention(*qkv, bias=bias.astype(qkv[0].dtype),
                                     mask=mask[:, None, None, :], scale=1.0)
    x = x + dense(c.d_model, ("heads", "kv", "embed"), "o", axis=(-2, -1))(a)
    h = RMSNorm(c.layer_norm_epsilon, self.dtype, self.param_dtype, name="ff_norm")(x)
    act = _ACTS[c.activation]
    if c.gated:
      h = act(dense(c.d_ff, ("embed", "mlp"), "wi_0")(h)) * dense(
          c.d_ff, ("embed", "mlp"), "wi_1")(h)
    else:
      h = act(dense(c.d_ff, ("embed", "mlp"), "wi")(h))
    h = nn.with_logical_constraint(h, ("act_batch", "act_seq", "act_mlp"))
    x = x + dense(c.d_model, ("mlp", "embed"), "wo")(h)
    return nn.with_logical_constraint(x, ("act_batch", "act_seq", "act_embed"))


class T5Encoder(nn.Module):
  """tokens int32 [B, L], mask bool [B, L] -> hidden states [B, L, d_model]."""
  cfg: T5Config
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    c = self.cfg
    l = tokens.shape[1]
    mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
    x = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                 embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                             ("vocab", "embed")),
                 name="token_embed")(tokens)
    table = self.param("rel_bias", nn.with_logical_partitioning(
        nn.initializers.normal(0.1), (None, "heads")),
        (c.relative_attention_num_buckets, c.num_heads), self.param_dtype)
    pos = jnp.arange(l)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None],
                                       c.relative_attention_num_buckets,
                                       c.relative_attention_max_distance)   # [q, k]
    bias = jnp.transpose(jnp.asarray(table, jnp.float32)[buckets], (2, 0, 1))[None]  # [1,H,q,k]
    for i in range(c.num_layers):
      x = T5Block(c, self.dtype, self.param_dtype, name=f"block_{i}")(x, bias, mask)
    return RMSNorm(c.layer_norm_epsilon, self.dtype, self.param_dtype, name="final_norm")(x)


def _hf_to_params(get, names: set[str], cfg: T5Config, torch_layout: bool) -> dict:
  """Map HF names ('.weight' everywhere, Linear [out, in] when torch_layout) to our tree."""
  c, inner = cfg, cfg.num_heads * cfg.d_kv

  def w(name, shape):
    if name not in names:
      raise KeyError(f"T5 weights lack {name!r} (config says num_layers={c.num_layers}, "
                     f"feed_forward_proj={c.feed_forward_proj!r})")
    a = np.asarray(get(name))
    if torch_layout and len(shape) == 2 and not name.endswith(("shared.weight",
                                                               "embed_tokens.weight",
                                                               "relative_attention_bias.weight")):
      a = a.T
    if a.shape != shape:
      raise ValueError(f"T5 weight {name!r} has shape {a.shape}, config.json implies {shape}")
    return a

  emb = "shared.weight" if "shared.weight" in names else "encoder.embed_tokens.weight"
  p = {"token_embed": {"embedding": w(emb, (c.vocab_size, c.d_model))},
       "rel_bias": w("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                     (c.relative_attention_num_buckets, c.num_heads)),
       "final_norm": {"scale": w("encoder.final_layer_norm.weight", (c.d_model,))}}
  for i in range(c.num_layers):
    pre = f"encoder.block.{i}.layer."
    att = {n: {"kernel": w(f"{pre}0.SelfAttention.{n}.weight", (c.d_model, inner)).reshape(
        c.d_model, c.num_heads, c.d_kv)} for n in "qkv"}
    att["o"] = {"kernel": w(f"{pre}0.SelfAttention.o.weight", (inner, c.d_model)).reshape(
        c.num_heads, c.d_kv, c.d_model)}
    ffn = ["wi_0", "wi_1"] if c.gated else ["wi"]
    ff = {n: {"kernel": w(f"{pre}1.DenseReluDense.{n}.weight", (c.d_model, c.d_ff))} for n in ffn}
    ff["wo"] = {"kernel": w(f"{pre}1.DenseReluDense.wo.weight", (c.d_ff, c.d_model))}
    p[f"block_{i}"] = {"attn_norm": {"scale": w(f"{pre}0.layer_norm.weight", (c.d_model,))},
                       "ff_norm": {"scale": w(f"{pre}1.layer_norm.weight", (c.d_model,))},
                       **att, **ff}
  return p


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "flax_model.msgpack")


def check_t5_dir(path) -> None:
  """Raises FileNotFoundError listing all that a T5 directory lacks (config.json, weights,
  spiece.model / tokenizer.model), or ValueError if the tokenizer outgrows the vocabulary."""
  from sora_jax.data import tokenizer   # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  has = lambda names: any(os.path.isfile(os.path.join(path, n)) for n in names)
  missing = [" or ".join(names) for names in (("config.json",), _WEIGHT_FILES,
                                               tokenizer.T5_TOKENIZER_FILES) if not has(names)]
  if missing:
    raise FileNotFoundError(f"config.text.t5_path={path!r} lacks {'; '.join(missing)} "
                            "(a local HuggingFace T5 directory; nothing is downloaded)")
  tokenizer.load_t5_tokenizer(path)


def load_t5_encoder(path, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32
                    ) -> tuple[T5Encoder, dict]:
  """(module, variables) from a local directory; use `module.apply(variables, tokens, mask)`."""
  path = os.fspath(path)
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"T5 encoder: {cfg_path} not found; point the path at a directory "
                            "holding a HuggingFace T5 config.json and model.safetensors "
                            "(or flax_model.msgpack)")
  cfg = t5_config_from_json(cfg_path)
  st, index, mp = (os.path.join(path, n) for n in _WEIGHT_FILES)
  if os.path.isfile(st) or os.path.isfile(index):
    from safetensors import safe_open   # pylint: disable=import-outside-toplevel
    if os.path.isfile(st):
      files = {st}
      where = None
    else:
      with open(index) as f:
        where = {k: os.path.join(path, v) for k, v in json.load(f)["weight_map"].items()}
      files = set(where.values())
    handles = {fn: safe_open(fn, framework="numpy") for fn in files}
    key_file = {k: fn for fn, h in handles.items() for k in h.keys()}
    params = _hf_to_params(lambda k: handles[key_file[k]].get_tensor(k), set(key_file), cfg,
                           torch_layout=True)
  elif os.path.isfile(mp):
    from flax import serialization   # pylint: disable=import-outside-toplevel
    with open(mp, "rb") as f:
      tree = serialization.msgpack_restore(f.read())
    tree = tree.get("params", tree)
    if "token_embed" in tree:       # saved from this module
      params = jax.tree.map(np.asarray, tree)
    else:                           # HF Flax names: '.kernel' [in, out], '.embedding'
      flat = {k.rsplit(".", 1)[0] + ".weight": v for k, v in _flatten(tree).items()}
      params = _hf_to_params(flat.__getitem__, set(flat), cfg, torch_layout=False)
  else:
    raise FileNotFoundError(f"T5 encoder: no weights in {path}: expected model.safetensors, "
                            "model.safetensors.index.json or flax_model.msgpack")
  params = jax.tree.map(lambda a: jnp.asarray(a, param_dtype), params)
  return T5Encoder(cfg, dtype=dtype, param_dtype=param_dtype), {"params": params}
