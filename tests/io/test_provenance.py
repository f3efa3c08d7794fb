"""C2PA content credentials: local key chain, sign + verify (embedded and sidecar), manifest fields,
tampering, key discovery and the weights digest."""
import hashlib
import os
import struct

import numpy as np
import pytest

pytest.importorskip("c2pa", reason="c2pa-python is not installed (pip install "
                    "'sora_jax[provenance]'); C2PA signing cannot be tested")

from PIL import Image  # noqa: E402

from sora_jax.io import provenance, video  # noqa: E402

DIGEST = hashlib.sha256(b"weights").hexdigest()
SAMPLER = {"name": "euler", "steps": np.int64(8), "cfg": np.float32(4.5), "shift": 3.0,
           "interval": np.array([0.25, 1.0])}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
  return provenance.init_keys(tmp_path_factory.mktemp("keys"))


def _frames(t=5, h=32, w=32):
  return np.random.default_rng(0).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _write(path):
  if path.suffix in (".png", ".jpg"):
    Image.fromarray(_frames(1)[0]).save(path)
  else:
    video.write_video(path, _frames())
  return path


def _manifest(prompt="a red ball bounces twice", **kw):
  kw = {"seed": 7, "sampler": SAMPLER, "weights_digest": DIGEST, "model": "t2v-demo",
        "version": "9.8.7", **kw}
  return provenance.manifest_for(prompt=prompt, **kw)


def _mp4_box(data, name):
  """(start, size) of a top-level ISO-BMFF box."""
  pos = 0
  while pos + 8 <= len(data):
    size, kind = struct.unpack(">I4s", data[pos:pos + 8])
    size = struct.unpack(">Q", data[pos + 8:pos + 16])[0] if size == 1 else size or len(data) - pos
    if kind == name:
      return pos, size
    pos += size
  raise AssertionError(f"no {name!r} box")


def _jpeg_scan_offset(data):
  """The middle of the entropy-coded scan, found by walking the segment headers.

  Searching for the SOS marker's bytes is not enough: the embedded manifest (an APP11
  segment before the scan) holds signatures and certificates from fresh keys, which
  contain 0xFFDA by chance (2 runs in 300 measured), and the flip then hit the manifest.
  """
  pos = 2                                                   # after SOI
  while data[pos] == 0xFF:
    marker = data[pos + 1]
    length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
    if marker == 0xDA:                                      # SOS: the scan follows its header
      scan = pos + 2 + length
      return (scan + len(data) - 2) // 2                    # before EOI
    pos += 2 + length
  raise AssertionError("no SOS segment")


def _payload_offset(path):
  """An offset well inside the media payload (mp4 mdat, png IDAT, jpeg scan), not the manifest."""
  data = path.read_bytes()
  if path.suffix == ".mp4":
    start, size = _mp4_box(data, b"mdat")
    return start + size // 2
  if path.suffix == ".png":
    i = data.index(b"IDAT")
    return i + 4 + struct.unpack(">I", data[i - 4:i])[0] // 2
  if path.suffix == ".jpg":
    return _jpeg_scan_offset(data)
  return len(data) // 2


def _flip(path, offset):
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x01
  path.write_bytes(bytes(data))


def test_init_keys_makes_a_root_to_leaf_chain(keys):
  from cryptography import x509
  cert_path, key_path = keys
  assert os.path.basename(cert_path) == "c2pa_cert.pem"
  assert os.path.basename(key_path) == "c2pa_key.pem"
  assert os.stat(key_path).st_mode & 0o777 == 0o600
  leaf, root = x509.load_pem_x509_certificates(open(cert_path, "rb").read())
  assert leaf.issuer == root.subject != leaf.subject     # c2pa-rs rejects self-signed leaves
  assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
  assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
  eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
  assert x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION in eku


def test_init_keys_refuses_to_overwrite(tmp_path):
  cert, key = provenance.init_keys(tmp_path)
  before = open(key, "rb").read()
  with pytest.raises(FileExistsError, match="overwrite=True"):
    provenance.init_keys(tmp_path)
  assert open(key, "rb").read() == before
  provenance.init_keys(tmp_path, overwrite=True)
  assert open(key, "rb").read() != before


def test_find_keys(tmp_path, monkeypatch, keys):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
  monkeypatch.delenv(provenance.ENV_CERT, raising=False)
  monkeypatch.delenv(provenance.ENV_KEY, raising=False)
  assert provenance.find_keys() is None
  assert provenance.find_keys(tmp_path / "nowhere") is None
  made = provenance.init_keys()                                  # the default directory
  assert made[0].startswith(str(tmp_path / "home" / ".config" / "sora_jax" / "keys"))
  assert provenance.find_keys() == made
  assert provenance.find_keys(os.path.dirname(keys[0])) == keys  # an argument wins
  monkeypatch.setenv(provenance.ENV_CERT, keys[0])
  monkeypatch.setenv(provenance.ENV_KEY, keys[1])
  assert provenance.find_keys() == keys                          # then the environment
  monkeypatch.setenv(provenance.ENV_KEY, str(tmp_path / "missing.pem"))
  assert provenance.find_keys() is None


@pytest.mark.parametrize("name", ["clip.mp4", "frame.png", "frame.jpg"])
def test_sign_embeds_and_verifies(tmp_path, keys, name):
  path = _write(tmp_path / name)
  assert provenance.sign(path, _manifest(), *keys) == str(path)
  assert not (tmp_path / (name + ".c2pa")).exists()
  assert sorted(os.listdir(tmp_path)) == [name]                 # no temp files left behind
  res = provenance.verify(path)
  assert res["valid"] and res["signature_ok"] and res["embedded"], res
  assert not res["trusted"] and any("untrusted" in w for w in res["warnings"])
  m = res["manifest"]
  assert m["generation"] == {"prompt": "a red ball bounces twice", "seed": 7,
                             "sampler": {"name": "euler", "steps": 8, "cfg": 4.5, "shift": 3.0,
                                         "interval": "0.25,1.0"},   # c2pa garbles number arrays
                             "weights_sha256": DIGEST, "model": "t2v-demo"}
  assert m["generator"] == {"name": "sora_jax", "version": "9.8.7"}
  assert m["action"] == "c2pa.created" and m["digital_source_type"].endswith(
      "/trainedAlgorithmicMedia")
  assert m["title"] == name
  if name.endswith(".mp4"):
    assert video.read_video(path)[0].shape == (5, 32, 32, 3)   # still a playable video
  trusted = provenance.verify(path, trust_anchors=keys[0])      # our root as trust anchor
  assert trusted["valid"] and trusted["trusted"] and not trusted["warnings"], trusted


def test_sidecar_for_formats_c2pa_cannot_embed_into(tmp_path, keys):
  assert not provenance.embeds("x.webm") and provenance.embeds("x.mp4")
  path = _write(tmp_path / "clip.webm")
  original = path.read_bytes()
  where = provenance.sign(path, _manifest(), *keys)
  assert where == str(path) + ".c2pa" and path.read_bytes() == original
  res = provenance.verify(path)
  assert res["valid"] and res["signature_ok"] and res["embedded"] is False, res
  assert res["manifest"]["generation"]["seed"] == 7
  _flip(path, len(original) // 2)
  res = provenance.verify(path)
  assert not res["valid"] and any("mismatch" in e for e in res["errors"]), res
  os.remove(where)
  assert not provenance.verify(path)["valid"]


def test_prompt_left_out_when_none(tmp_path, keys):
  path = _write(tmp_path / "clip.mp4")
  provenance.sign(path, _manifest(prompt=None), *keys)
  gen = provenance.verify(path)["manifest"]["generation"]
  assert "prompt" not in gen and gen["seed"] == 7


@pytest.mark.parametrize("name", ["clip.mp4", "frame.png", "frame.jpg"])
def test_one_flipped_media_byte_fails(tmp_path, keys, name):
  path = _write(tmp_path / name)
  provenance.sign(path, _manifest(), *keys)
  _flip(path, _payload_offset(path))
  res = provenance.verify(path)
  assert not res["valid"] and any("Hash.mismatch" in e for e in res["errors"]), res


def test_no_manifest_is_not_valid(tmp_path):
  res = provenance.verify(_write(tmp_path / "plain.mp4"))
  assert not res["valid"] and not res["signature_ok"] and "no C2PA manifest" in res["errors"][0]
  assert not provenance.verify(tmp_path / "absent.mp4")["valid"]


def test_edit_records_the_input_as_parent_ingredient(tmp_path, keys):
  src = _write(tmp_path / "in.mp4")
  provenance.sign(src, _manifest(), *keys)
  out = _write(tmp_path / "out.mp4")
  m = _manifest(action="c2pa.edited", ingredients=[src])
  with pytest.raises(ValueError, match="ingredients"):
    provenance.sign(out, m, *keys)                              # the parent must be given
  provenance.sign(out, m, *keys, ingredients=[src])
  res = provenance.verify(out)
  assert res["valid"], res
  assert res["manifest"]["action"] == "c2pa.edited"
  assert res["manifest"]["actions"] == ["c2pa.opened", "c2pa.edited"]
  assert res["manifest"]["ingredients"] == ["in.mp4"]
  assert res["manifest"]["generation"]["inputs"] == ["in.mp4"]
  with pytest.raises(ValueError):
    _manifest(action="c2pa.edited")
  with pytest.raises(ValueError):
    _manifest(action="c2pa.placed")


def test_failed_sign_leaves_the_file_untouched(tmp_path, keys):
  path = _write(tmp_path / "clip.mp4")
  before = path.read_bytes()
  other_key = provenance.init_keys(tmp_path / "other")[1]       # key does not match the cert
  with pytest.raises(provenance.ProvenanceError):
    provenance.sign(path, _manifest(), keys[0], other_key)
  assert path.read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "other"]


def test_weights_digest(tmp_path):
  f = tmp_path / "w.msgpack"
  f.write_bytes(b"weights")
  assert provenance.weights_digest(f) == provenance.weights_digest(str(f)) == DIGEST
  params = {"dense": {"kernel": np.ones((2, 3), np.float32), "bias": np.zeros(3, np.float32)}}
  d = provenance.weights_digest(params)
  assert len(d) == 64 and d == provenance.weights_digest(
      {"dense": {"bias": np.zeros(3, np.float32), "kernel": np.ones((2, 3), np.float32)}})
  params["dense"]["bias"] = params["dense"]["bias"] + 1e-3
  assert provenance.weights_digest(params) != d
  (tmp_path / "ckpt" / "sub").mkdir(parents=True)
  (tmp_path / "ckpt" / "sub" / "a").write_bytes(b"1")
  d1 = provenance.weights_digest(tmp_path / "ckpt")
  (tmp_path / "ckpt" / "sub" / "a").write_bytes(b"2")
  assert provenance.weights_digest(tmp_path / "ckpt") != d1
  with pytest.raises(FileNotFoundError):
    provenance.weights_digest(tmp_path / "missing")
