"""FVD: the Fréchet distance against its closed form, I3D from a local file in the PyTorch
port's naming (a tiny random network made here), and `eval t2v`'s FVD beside adherence."""
import numpy as np
import pytest

from sora_jax.eval import fvd
from sora_jax.models import i3d
from sora_jax.models.local_weights import write_arrays

# The port's widths (Conv3d_1a, 2b, 2c; each Mixed block's six branch widths), scaled down.
_STEM = (64, 64, 192)
_MIXED = {"Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
          "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
          "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
          "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
          "Mixed_5c": (384, 192, 384, 48, 128, 128)}


def tiny_state_dict(div: int = 16, classes: int = 10, seed: int = 0) -> dict:
  """Random weights in pytorch-i3d's names and layouts ([O, I, kT, kH, kW]; BN stats)."""
  rng = np.random.default_rng(seed)
  sd = {}

  def unit(name, cin, cout, k):
    sd[f"{name}.conv3d.weight"] = rng.normal(0, (cin * np.prod(k)) ** -0.5, (cout, cin, *k))
    sd[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout)
    sd[f"{name}.bn.bias"] = rng.normal(0, 0.1, cout)
    sd[f"{name}.bn.running_mean"] = rng.normal(0, 0.1, cout)
    sd[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, cout)
    return cout

  c = unit("Conv3d_1a_7x7", 3, _STEM[0] // div, (7, 7, 7))
  c = unit("Conv3d_2b_1x1", c, _STEM[1] // div, (1, 1, 1))
  c = unit("Conv3d_2c_3x3", c, _STEM[2] // div, (3, 3, 3))
  for name, widths in _MIXED.items():
    w = [max(1, x // div) for x in widths]
    unit(f"{name}.b0", c, w[0], (1, 1, 1))
    unit(f"{name}.b1b", unit(f"{name}.b1a", c, w[1], (1, 1, 1)), w[2], (3, 3, 3))
    unit(f"{name}.b2b", unit(f"{name}.b2a", c, w[3], (1, 1, 1)), w[4], (3, 3, 3))
    unit(f"{name}.b3b", c, w[5], (1, 1, 1))
    c = w[0] + w[2] + w[4] + w[5]
  sd["logits.conv3d.weight"] = rng.normal(0, c ** -0.5, (classes, c, 1, 1, 1))
  sd["logits.conv3d.bias"] = np.zeros(classes)
  return sd


@pytest.fixture(scope="module")
def i3d_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("i3d") / "i3d_tiny.npz")
  write_arrays(path, tiny_state_dict())
  return path


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert fvd.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want)
  # A rotated pair (non-diagonal, singular) against itself: 0.
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  s = q @ np.diag([2.0, 1.0, 0.5, 0.0, 0.0]) @ q.T
  assert abs(fvd.frechet_distance(mu1, s, mu1, s)) < 1e-6   # sqrt of round-off eigenvalues


def test_same_padding_is_the_ports():
  assert i3d._same_pads((224, 16), (7, 7), (2, 2)) == [(2, 3), (2, 3)]
  assert i3d._same_pads((7, 8), (3, 3), (2, 1)) == [(1, 1), (1, 1)]   # 7 % 2: k - 1


def test_fvd_of_a_tiny_i3d_separates_two_distributions(i3d_path):
  net = i3d.load_i3d(i3d_path)
  rng = np.random.default_rng(1)

  def videos(n, level):
    base = rng.integers(0, 256, (n, 8, 16, 16, 3))
    return np.clip(base * 0.5 + level, 0, 255).astype(np.uint8)

  a, a2, bright = videos(12, 20), videos(12, 20), videos(12, 120)
  f = fvd.video_features(net, a, batch_size=8, size=32)
  assert f.shape == (12, 10) and np.all(np.isfinite(f))
  assert fvd.fvd(net, a, a, size=32)["fvd"] == pytest.approx(0.0, abs=1e-6)
  same, other = fvd.fvd(net, a, a2, size=32)["fvd"], fvd.fvd(net, a, bright, size=32)["fvd"]
  assert 0 < same < other


def test_a_file_that_is_not_i3d_is_named(tmp_path):
  path = str(tmp_path / "other.npz")
  write_arrays(path, {"stage0.conv0.kernel": np.zeros((3, 3, 3, 4))})
  with pytest.raises(ValueError, match="not an I3D state dict"):
    i3d.load_i3d(path)
  with pytest.raises(FileNotFoundError, match="fvd weights"):
    i3d.load_i3d(str(tmp_path / "missing.npz"))


def test_eval_t2v_reports_fvd_beside_adherence(t2v_tiny, i3d_path):
  from sora_jax.eval import t2v_eval
  r = t2v_eval.evaluate_model(t2v_tiny, "test", 2, fvd_weights=i3d_path)
  assert {"adherence", "chance", "caption_losses", "fvd"} <= set(r)
  assert r["fvd"]["num_real"] == r["fvd"]["num_generated"] == 2
  assert np.isfinite(r["fvd"]["fvd"]) and r["fvd"]["fvd"] > 0
  with pytest.raises(ValueError, match="trained size"):
    t2v_eval.evaluate_model(t2v_tiny, "test", 2, size={"height": 64}, fvd_weights=i3d_path)
