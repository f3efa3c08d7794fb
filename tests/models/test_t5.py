"""T5 encoder: loads HF-named weights written here, and matches a plain-numpy T5 forward."""
import io
import json
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm
from safetensors.numpy import save_file

from sora_jax.data import tokenizer
from sora_jax.models import t5

B, L = 2, 24   # L > max_distance so the log-spaced and clipped buckets are exercised


def _config(ffp):
  return dict(model_type="t5", vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2,
              num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
              layer_norm_epsilon=1e-6, feed_forward_proj=ffp, is_encoder_decoder=True)


def _random_hf_weights(cfg, seed=0):
  """torch-layout HF names: Linear [out, in]; plus decoder junk the loader must ignore."""
  r = np.random.default_rng(seed)
  d, inner, f, h = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"], cfg["num_heads"]
  n = lambda *s: r.normal(0, 0.3, s).astype(np.float32)
  w = {"shared.weight": n(cfg["vocab_size"], d),
       "encoder.final_layer_norm.weight": 1 + n(d),
       "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
           n(cfg["relative_attention_num_buckets"], h),
       "decoder.final_layer_norm.weight": n(d)}
  for i in range(cfg["num_layers"]):
    p = f"encoder.block.{i}.layer."
    for q in "qkv":
      w[f"{p}0.SelfAttention.{q}.weight"] = n(inner, d)
    w[f"{p}0.SelfAttention.o.weight"] = n(d, inner)
    w[f"{p}0.layer_norm.weight"] = 1 + n(d)
    w[f"{p}1.layer_norm.weight"] = 1 + n(d)
    for name in (["wi_0", "wi_1"] if cfg["feed_forward_proj"].startswith("gated") else ["wi"]):
      w[f"{p}1.DenseReluDense.{name}.weight"] = n(f, d)
    w[f"{p}1.DenseReluDense.wo.weight"] = n(d, f)
  return w


def _np_bucket(rel, num_buckets, max_distance):
  num_buckets //= 2
  out = 0 if rel <= 0 else num_buckets
  n = abs(rel)
  max_exact = num_buckets // 2
  if n < max_exact:
    return out + n
  large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
  return out + min(large, num_buckets - 1)


def _np_t5(cfg, w, tokens, mask):
  """Reference T5 encoder forward in float64 numpy, straight from the HF module structure."""
  h, dk, eps = cfg["num_heads"], cfg["d_kv"], cfg["layer_norm_epsilon"]
  gated = cfg["feed_forward_proj"].startswith("gated")
  gelu_new = lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
  act = gelu_new if gated else (lambda x: np.maximum(x, 0))
  rms = lambda x, g: g * x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps)
  lin = lambda x, name: x @ w[name].astype(np.float64).T
  x = w["shared.weight"].astype(np.float64)[tokens]
  b, l, _ = x.shape
  table = w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
  buckets = np.array([[_np_bucket(k - q, cfg["relative_attention_num_buckets"],
                                  cfg["relative_attention_max_distance"]) for k in range(l)]
                      for q in range(l)])
  pos_bias = table[buckets].transpose(2, 0, 1)[None]                     # [1, H, q, k]
  mask_bias = np.where(mask, 0.0, -1e30)[:, None, None, :]
  for i in range(cfg["num_layers"]):
    p = f"encoder.block.{i}.layer."
    y = rms(x, w[f"{p}0.layer_norm.weight"])
    q, k, v = (lin(y, f"{p}0.SelfAttention.{n}.weight").reshape(b, l, h, dk).transpose(0, 2, 1, 3)
               for n in "qkv")
    s = q @ k.transpose(0, 1, 3, 2) + pos_bias + mask_bias
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v
    x = x + lin(a.transpose(0, 2, 1, 3).reshape(b, l, h * dk), f"{p}0.SelfAttention.o.weight")
    y = rms(x, w[f"{p}1.layer_norm.weight"])
    if gated:
      y = act(lin(y, f"{p}1.DenseReluDense.wi_0.weight")) * lin(y, f"{p}1.DenseReluDense.wi_1.weight")
    else:
      y = act(lin(y, f"{p}1.DenseReluDense.wi.weight"))
    x = x + lin(y, f"{p}1.DenseReluDense.wo.weight")
  return rms(x, w["encoder.final_layer_norm.weight"])


def _inputs():
  tokens = np.random.default_rng(5).integers(1, 40, (B, L)).astype(np.int32)
  mask = np.arange(L)[None] < np.array([[L], [9]])
  return np.where(mask, tokens, 0), mask


def test_relative_position_bucket_hand_values():
  rel = jnp.array([0, 1, -1, -8, -20, 200, -200])
  got = t5.relative_position_bucket(rel, 32, 128)
  # 0 -> 0; +1 -> 16+1; -1 -> 1; -8 -> 8 + 0; -20 -> 8 + int(log(2.5)/log(16)*8) = 10; clipped
  np.testing.assert_array_equal(got, [0, 17, 1, 8, 10, 31, 15])
  for r in range(-40, 41):
    assert int(t5.relative_position_bucket(jnp.array(r), 8, 20)) == _np_bucket(r, 8, 20)


@pytest.fixture(scope="module", params=["gated-gelu", "relu"])
def t5_dir(request, tmp_path_factory):
  cfg = _config(request.param)
  d = tmp_path_factory.mktemp(request.param)
  (d / "config.json").write_text(json.dumps(cfg))
  w = _random_hf_weights(cfg)
  save_file(w, str(d / "model.safetensors"))
  return d, cfg, w


def test_loaded_encoder_matches_numpy_reference(t5_dir):
  d, cfg, w = t5_dir
  module, variables = t5.load_t5_encoder(d)
  assert module.cfg.gated == cfg["feed_forward_proj"].startswith("gated")
  tokens, mask = _inputs()
  out = jax.jit(module.apply)(variables, tokens, mask)
  assert out.shape == (B, L, cfg["d_model"])
  ref = _np_t5(cfg, w, tokens, mask)
  np.testing.assert_allclose(out[0], ref[0], rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(out[1, :9], ref[1, :9], rtol=2e-4, atol=2e-4)
  # padding does not affect the unpadded positions
  junk = np.where(mask, tokens, 7)
  out2 = jax.jit(module.apply)(variables, junk, mask)
  np.testing.assert_allclose(out2[1, :9], out[1, :9], atol=1e-5)


def test_hf_flax_msgpack_loads_same(t5_dir, tmp_path):
  d, cfg, w = t5_dir
  # HF Flax layout: nested names, kernels [in, out], embeddings under 'embedding'
  tree = {}
  for name, a in w.items():
    parts = name.split(".")
    leaf = "embedding" if parts[-2] in ("shared", "relative_attention_bias") else (
        "weight" if "layer_norm" in parts[-2] else "kernel")
    val = a.T if leaf == "kernel" else a
    node = tree
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[leaf] = val
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  (tmp_path / "flax_model.msgpack").write_bytes(flax.serialization.msgpack_serialize(tree))
  m1, v1 = t5.load_t5_encoder(d)
  m2, v2 = t5.load_t5_encoder(tmp_path)
  for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v2)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(v1) == jax.tree.structure(v2)
  # the module's own tree round-trips through msgpack too, and init yields the same structure
  (tmp_path / "flax_model.msgpack").write_bytes(flax.serialization.to_bytes(v1))
  _, v3 = t5.load_t5_encoder(tmp_path)
  assert jax.tree.structure(v3) == jax.tree.structure(v1)
  init = jax.eval_shape(m1.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  assert jax.tree.structure(flax.linen.unbox(init)) == jax.tree.structure(v1)


def test_missing_files_and_bad_shapes(tmp_path, t5_dir):
  _, cfg, w = t5_dir
  with pytest.raises(FileNotFoundError, match="config.json"):
    t5.load_t5_encoder(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    t5.load_t5_encoder(tmp_path)
  bad = dict(w)
  bad["encoder.block.1.layer.0.SelfAttention.q.weight"] = np.zeros((3, 3), np.float32)
  save_file(bad, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="block.1.layer.0.SelfAttention.q"):
    t5.load_t5_encoder(tmp_path)
  del bad["encoder.block.1.layer.0.SelfAttention.q.weight"]
  save_file(bad, str(tmp_path / "model.safetensors"))
  with pytest.raises(KeyError, match="block.1.layer.0.SelfAttention.q"):
    t5.load_t5_encoder(tmp_path)


def test_sharded_safetensors_index(t5_dir, tmp_path):
  d, cfg, w = t5_dir
  names = sorted(w)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for fn, keys in shards.items():
    save_file({k: w[k] for k in keys}, str(tmp_path / fn))
  index = {"weight_map": {k: fn for fn, keys in shards.items() for k in keys}}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  _, v1 = t5.load_t5_encoder(d)
  _, v2 = t5.load_t5_encoder(tmp_path)
  for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v2)):
    np.testing.assert_array_equal(a, b)


def test_t5_dir_with_sentencepiece_end_to_end(t5_dir, tmp_path):
  """A complete directory passes check_t5_dir; its tokenizer's ids drive the encoder."""
  d, cfg, w = t5_dir
  with pytest.raises(FileNotFoundError, match="config.json.*model.safetensors.*spiece.model"):
    t5.check_t5_dir(tmp_path)
  for name in ("config.json", "model.safetensors"):
    (tmp_path / name).write_bytes((d / name).read_bytes())
  with pytest.raises(FileNotFoundError, match=r"config\.text\.t5_path.*spiece\.model"):
    t5.check_t5_dir(tmp_path)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(["a red ball rolls", "a blue box falls", "the red box rolls"] * 5),
      model_writer=model, vocab_size=cfg["vocab_size"], model_type="bpe", pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
  (tmp_path / "spiece.model").write_bytes(model.getvalue())
  t5.check_t5_dir(tmp_path)
  tok = tokenizer.get_tokenizer("t5", tmp_path)
  assert tok.vocab_size <= cfg["vocab_size"]
  tokens, mask = tok.encode(["a red box rolls", "a blue ball"], max_len=L)
  module, variables = t5.load_t5_encoder(tmp_path)
  out = jax.jit(module.apply)(variables, tokens, mask)
  ref = _np_t5(cfg, w, tokens, mask)
  np.testing.assert_allclose(out[0][mask[0]], ref[0][mask[0]], rtol=2e-4, atol=2e-4)
  # a config whose embedding table is smaller than the tokenizer's vocabulary is refused
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, vocab_size=4)))
  with pytest.raises(ValueError, match="vocab_size=4"):
    t5.check_t5_dir(tmp_path)
