"""An invisible, keyed DWT-DCT watermark carrying a 32-64 bit payload in every video frame.

Pure numpy + scipy. The mark lives in the luma (Y of YCbCr) on a resolution-normalised working
grid: a frame's luma is resampled to `GRID x GRID` (aspect stretched), one Haar DWT level is taken
and its LL subband (32x32) is cut into 4x4 blocks whose orthonormal DCT is taken. The AC
coefficients of each block (`COEFS`: 4-12 cycles per frame on an axis, the middle of what a
64-pixel frame shows) are the carriers: 64 blocks x 15 = 960 slots. Resampling, Haar and block DCT are linear and
separable, so the analysis is `C = A_h @ Y @ A_w.T` with one small matrix per axis, and the pixel
change for a coefficient change is its minimum-norm inverse `pinv(A)`: the least-energy edit.

Payload bits + CRC-16 form the codeword. A key (any int) draws the slot layout (which slot carries
which codeword bit, ~15 slots per bit at 48 bits, each with a +-1 sign) and a whitening mask;
without the key the mark reads as noise. The mark is the same in every frame: no flicker, trims
and frame-rate changes don't matter, and h264's P-frames, which skip small changes, keep it (a
layout that changed over time measured much weaker after h264). Embedding is informed, on the
frames' mean coefficients: each slot is moved just past `+-strength` along its sign by the least
change if that costs at most `CAP x strength`, and for every bit the cheapest `FORCE` fraction of
its slots is moved whatever it costs (strong edges the wrong way round are outvoted); a few rounds
correct uint8 rounding and clipping. The same delta goes to R, G and B. By default the strength is
the largest that keeps PSNR >= 40 dB, so busy frames get a weaker mark rather than a visible one.

Extraction averages the frames (the host's motion averages out, the mark doesn't), takes a hard
majority vote per codeword bit and checks the CRC (a failing CRC may flip the `CHASE` least
certain bits: small Chase list decoding). Thanks to the working grid a resized video
reads back at any size (also at the small size itself). There is no sync pattern: extraction
searches centre-crop scales (`CROP_SEARCH`), so centre crops of up to 20 % are found; other crops
and rotations are not.
"""
from __future__ import annotations

import functools
import hashlib
import itertools

import numpy as np
from scipy import fft, stats

GRID = 64                       # working grid (pixels per side; aspect is stretched)
BLOCK = 4                       # DCT block size in the LL subband
COEFS = tuple((u, v) for u in range(BLOCK) for v in range(BLOCK) if u + v)   # all AC carriers
CRC_BITS = 16
CHASE = 4                       # least certain bits a CRC failure may flip (16 tries)
STRENGTHS = tuple(np.round(np.geomspace(1.0, 12.0, 25), 2))   # slot margins tried (luma levels)
DEFAULT_PSNR = 40.0             # dB, marked vs clean, that the default strength stays above
CAP = 3.0                       # slots cheaper than CAP x strength are always moved
FORCE = 0.6                     # ... and at least this fraction of each bit's slots
ROUNDS = 4                      # embed / re-measure rounds (rounding, clipping)
CROP_SEARCH = tuple(float(f) for f in np.round(np.arange(1.0, 0.79, -0.025), 3))
_LUMA = np.array([0.299, 0.587, 0.114])


def payload_for(text: str, *, bits: int = 48) -> int:
  """A stable `bits`-bit payload for a string, e.g. a weights digest: sha256('sora_jax:' + text)."""
  _check_bits(bits)
  digest = hashlib.sha256(("sora_jax:" + text).encode()).digest()
  return int.from_bytes(digest[:8], "big") >> (64 - bits)


def embed(frames: np.ndarray, payload: int | bytes, *, bits: int = 48, key: int = 0,
          strength: float | None = None, psnr: float = DEFAULT_PSNR) -> np.ndarray:
  """`frames` (uint8 `[T, H, W, 3]`, or one `[H, W, 3]` image) with the payload embedded.

  Same shape and dtype; only the luma changes. `strength` is the slot margin in luma levels; by
  default it is the largest of `STRENGTHS` whose change keeps PSNR (marked vs `frames`) >= `psnr`
  dB, so textured or busy frames, which cost more to mark, get a weaker mark, never a visible one.
  """
  x, single = _as_video(frames)
  _, h, w, _ = x.shape
  if min(h, w) < GRID // 2:
    raise ValueError(f"frames must be at least {GRID // 2}x{GRID // 2} to carry a watermark, "
                     f"got {h}x{w}")
  code = _codeword(_payload_int(payload, bits), bits)
  plan = _plan(key, bits)
  target = plan.sign * (np.where(code, 1.0, -1.0) * plan.white)[plan.bit]   # each slot's sign
  a_h, a_w = _analysis(h)[0], _analysis(w)[0]
  b_h, b_w = _synthesis(h), _synthesis(w)

  def coef(frames):
    return (a_h @ _luma(frames).mean(0) @ a_w.T)[plan.rows, plan.cols]

  def step(mean, s):
    """The luma change that moves mean coefficients `mean` to margin `s`."""
    need = np.clip(s - target * mean, 0.0, None)
    need = np.where((need > 0.02 * s) & _chosen(need, plan.bit, s), need, 0.0)
    delta = np.zeros((GRID // 2, GRID // 2))
    delta[plan.rows, plan.cols] = target * need
    return b_h @ delta @ b_w.T

  clean = coef(x)
  candidates = [strength] if strength is not None else sorted(STRENGTHS, reverse=True)
  for s in candidates:
    if strength is None and _psnr_of(step(clean, s)) < psnr and s != min(candidates):
      continue                    # predicted from the first step; checked on the result below
    luma_delta = np.zeros((h, w))
    out = x
    for i in range(ROUNDS):
      d = step(clean if i == 0 else coef(out), s)
      if not d.any():
        break
      luma_delta += d
      out = np.clip(np.round(x + luma_delta[..., None]), 0, 255).astype(np.uint8)
    if strength is not None or _psnr_of(out.astype(np.float64) - x) >= psnr:
      break
  return out[0] if single else out


def extract(frames: np.ndarray, *, bits: int = 48, key: int = 0):
  """Reads a payload back: `(payload_int, confidence, bit_margins)`.

  `confidence` is 0 unless the CRC-16 matches (after at most `CHASE` least certain bits are
  flipped); then it is `1 - p`, p the chance that votes this one-sided come from an unmarked video
  or a wrong key (Bonferroni over the crops searched).
  `bit_margins` (`[bits]`, in [0, 1]): each payload bit's vote, |agree - disagree| / votes.
  """
  tried = _hypotheses(frames, bits, key)
  if not tried:
    return 0, 0.0, np.zeros(bits)
  r = max(tried, key=lambda r: (r["crc_ok"], r["z"]))
  p = min(1.0, len(tried) * float(stats.norm.sf(r["z"])))
  confidence = (1.0 - p) if r["crc_ok"] else 0.0
  return r["payload"], confidence, r["margins"][:bits]


def detect(frames: np.ndarray, payload: int | bytes, *, bits: int = 48, key: int = 0):
  """Tests for one known payload: `(bit_accuracy, p_value)`.

  Bit accuracy is of the raw votes (no CRC correction) over the payload + CRC codeword, at the
  best of the searched crop scales; the p-value is the binomial tail of that many matching bits
  by chance, times the scales searched.
  """
  want = _codeword(_payload_int(payload, bits), bits)
  tried = _hypotheses(frames, bits, key)
  best = max((int(np.sum(r["raw"] == want)) for r in tried), default=0)
  p = min(1.0, max(1, len(tried)) * float(stats.binom.sf(best - 1, want.size, 0.5)))
  return best / want.size, p


# ---------------------------------------------------------------------------------- internals


def _hypotheses(frames, bits, key):
  """Decodes under every searched centre-crop scale; one dict for each."""
  x, _ = _as_video(frames)
  plan = _plan(key, bits)
  n = CRC_BITS + bits
  lum = _luma(x).mean(0)                                 # the mark is static: average over time
  out = []
  for crop in CROP_SEARCH:
    a_h, ok_h = _analysis(x.shape[1], crop)
    a_w, ok_w = _analysis(x.shape[2], crop)
    valid = ok_h[plan.rows] & ok_w[plan.cols]
    if not valid.any():
      continue
    coef = (a_h @ lum @ a_w.T)[plan.rows, plan.cols]
    vote = np.where(valid, np.sign(coef) * plan.sign, 0.0)
    total = np.bincount(plan.bit, vote, n) * plan.white
    count = np.bincount(plan.bit, np.abs(vote), n)
    code, crc_ok = _chase(total, bits)
    out.append(dict(code=code, crc_ok=crc_ok, raw=total > 0,
                    payload=int("".join("1" if c else "0" for c in code[:bits]), 2),
                    z=_vote_z(total, count), margins=np.abs(total) / np.maximum(count, 1)))
  return out


def _chase(total, bits):
  """Hard decision, and if the CRC fails, the flips of the CHASE least certain bits that pass it
  (fewest flips first): `(code, crc_ok)`."""
  code = total > 0
  if np.array_equal(_crc(code[:bits]), code[bits:]):
    return code, True
  weakest = np.argsort(np.abs(total), kind="stable")[:CHASE]
  for flips in sorted(itertools.product((0, 1), repeat=CHASE), key=sum)[1:]:
    trial = code.copy()
    trial[weakest[np.array(flips, bool)]] ^= True
    if np.array_equal(_crc(trial[:bits]), trial[bits:]):
      return trial, True
  return code, False


def _vote_z(total, count):
  """How far sum |votes| / sqrt(count) over bits lies above what random +-1 votes give."""
  stat, mean, var = 0.0, 0.0, 0.0
  for s, m in zip(np.abs(total), count.astype(int)):
    if m:
      mu, m2 = _abs_rademacher(m)
      stat += s / np.sqrt(m)
      mean, var = mean + mu, var + m2 - mu ** 2
  return float((stat - mean) / np.sqrt(var)) if var > 0 else 0.0


@functools.lru_cache(maxsize=512)
def _abs_rademacher(m: int):
  """E and E[.^2] of |sum of m random signs| / sqrt(m)."""
  k = np.arange(m + 1)
  s = np.abs(2 * k - m) / np.sqrt(m)
  pmf = stats.binom.pmf(k, m, 0.5)
  return float(pmf @ s), float(pmf @ s ** 2)


def _chosen(need, bit, strength):
  """Slots to move: those needing at most CAP x strength, plus for every bit the cheapest FORCE
  fraction of its slots, so no bit is left to the host's vote."""
  ok = need <= CAP * strength
  order = np.lexsort((need, bit))
  count = np.bincount(bit)
  rank = np.empty_like(order)
  rank[order] = np.arange(order.size) - (np.cumsum(count) - count)[bit[order]]
  return ok | (rank < np.ceil(FORCE * count[bit]))


class _Plan:
  """Keyed layout: slot -> (row, col) of the 32x32 coefficient plane, codeword bit and sign; and
  a whitening sign per codeword bit."""

  def __init__(self, key: int, bits: int):
    nb = GRID // 2 // BLOCK
    bi, bj, k = np.meshgrid(np.arange(nb), np.arange(nb), np.arange(len(COEFS)), indexing="ij")
    u, v = np.array(COEFS).T
    self.rows = (bi * BLOCK + u[k]).ravel()
    self.cols = (bj * BLOCK + v[k]).ravel()
    seed = hashlib.sha256(f"sora_jax.watermark:{int(key)}:{bits}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    n = CRC_BITS + bits
    self.bit = rng.permutation(np.arange(self.rows.size) % n)
    self.sign = rng.choice([-1.0, 1.0], self.rows.size)
    self.white = rng.choice([-1.0, 1.0], n)


@functools.lru_cache(maxsize=16)
def _plan(key: int, bits: int) -> _Plan:
  _check_bits(bits)
  return _Plan(key, bits)


@functools.lru_cache(maxsize=256)
def _analysis(n: int, crop: float = 1.0):
  """`(A, valid)`: A (`[GRID/2, n]`) maps one axis of a frame to LL-subband block-DCT coefficients.

  The frame is taken to show the centre `crop` fraction of the marked frame, resized; rows whose
  block reaches outside what is shown are not valid.
  """
  # Working-grid sample k sits at (k + 0.5) / GRID of the marked frame's axis; in our pixels:
  pos = (((np.arange(GRID) + 0.5) / GRID - (1 - crop) / 2) / crop) * n - 0.5
  support = max(1.0, n / (GRID * crop))                 # antialiased triangle when shrinking
  wts = np.clip(1.0 - np.abs(np.arange(n)[None, :] - pos[:, None]) / support, 0.0, None)
  resample = wts / np.maximum(wts.sum(1, keepdims=True), 1e-12)
  haar = np.kron(np.eye(GRID // 2), np.full((1, 2), 2 ** -0.5))           # Haar lowpass (LL)
  dct = np.kron(np.eye(GRID // 2 // BLOCK), fft.dct(np.eye(BLOCK), norm="ortho", axis=0))
  a = dct @ haar @ resample
  inside = (pos >= -0.5) & (pos <= n - 0.5)
  valid = inside.reshape(-1, 2 * BLOCK).all(1).repeat(BLOCK)
  a.setflags(write=False)
  valid.setflags(write=False)
  return a, valid


@functools.lru_cache(maxsize=32)
def _synthesis(n: int) -> np.ndarray:
  """Minimum-norm pixel change (`[n, GRID/2]`) for a change of the coefficients on one axis."""
  b = np.linalg.pinv(_analysis(n)[0])
  b.setflags(write=False)
  return b


def _psnr_of(diff: np.ndarray) -> float:
  mse = float(np.mean(np.square(diff)))
  return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")


def _luma(x: np.ndarray) -> np.ndarray:
  return x.astype(np.float64) @ _LUMA


def _as_video(frames):
  x = np.asarray(frames)
  if x.dtype != np.uint8:
    raise ValueError(f"frames must be uint8, got {x.dtype}")
  single = x.ndim == 3
  x = x[None] if single else x
  if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
    raise ValueError(f"frames must be [T, H, W, 3] or [H, W, 3], got shape {np.shape(frames)}")
  return x, single


def _check_bits(bits: int) -> None:
  if not 32 <= bits <= 64:
    raise ValueError(f"bits must be in [32, 64], got {bits}")


def _payload_int(payload: int | bytes, bits: int) -> int:
  _check_bits(bits)
  value = int.from_bytes(payload, "big") if isinstance(payload, (bytes, bytearray)) else payload
  if not 0 <= int(value) < 2 ** bits:
    raise ValueError(f"payload {value!r} does not fit in {bits} bits")
  return int(value)


def _crc(data: np.ndarray) -> np.ndarray:
  """CRC-16/CCITT (poly 0x1021, init 0xFFFF) of a bit sequence, as 16 bools."""
  reg = 0xFFFF
  for b in data:
    top = (reg >> 15) ^ int(b)
    reg = ((reg << 1) & 0xFFFF) ^ (0x1021 if top else 0)
  return np.array([(reg >> (15 - i)) & 1 for i in range(CRC_BITS)], bool)


def _codeword(value: int, bits: int) -> np.ndarray:
  data = np.array([(value >> (bits - 1 - i)) & 1 for i in range(bits)], bool)
  return np.concatenate([data, _crc(data)])
