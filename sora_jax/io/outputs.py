"""Writing generated media: checked before any work, screened, watermarked, written, signed.

Every file `sora-jax sample` / `demo` (and `TextToVideo.save`) writes goes through here:
  1. `check_output_path` — before sampling: a known format for the frame count, a writable
     directory, and an existing file kept unless overwrite=True;
  2. frame hooks (`safety.run_frame_hooks`) on the decoded frames;
  3. an invisible watermark in every frame (`io/watermark.py`, payload from the weights digest);
  4. the file, written to a temporary name and renamed (a failure leaves nothing half-written);
  5. a C2PA manifest signed with the local key (`io/provenance.py`), or — only when asked for
     with unsigned=True — no manifest.
"""
from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


class OutputError(ValueError):
  """An output path or format that cannot work; the message says how to fix it."""


def check_output_path(path: str, num_frames: int | None, *, overwrite: bool = False,
                      flag: str = "--out") -> str:
  """Raises OutputError before any sampling when `path` cannot receive `num_frames` frames
  (None: not known yet, the frame count is checked later)."""
  if not path:
    raise OutputError(f"{flag} is empty; name a file such as video.mp4")
  p = pathlib.Path(path)
  if p.is_dir() or str(path).endswith(os.sep):
    raise OutputError(f"{flag}={path} is a directory; name a file such as {p / 'video.mp4'}")
  ext = p.suffix.lower()
  if ext not in VIDEO_EXTS + IMAGE_EXTS:
    raise OutputError(f"{flag}={path}: unknown format {ext or '(no extension)'!r}; use one of "
                      f"{', '.join(VIDEO_EXTS + IMAGE_EXTS)}")
  if ext in IMAGE_EXTS and num_frames is not None and num_frames != 1:
    raise OutputError(f"{flag}={path} is an image format but {num_frames} frames were asked "
                      f"for; use .mp4/.webm/.gif for video, or --frames 1 for an image")
  if p.exists() and not overwrite:
    raise OutputError(f"{flag}={path} exists; pass --overwrite to replace it, or choose "
                      f"another name")
  parent = p.parent if str(p.parent) else pathlib.Path(".")
  existing = parent
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
    raise OutputError(f"{flag}={path}: cannot write into {existing} (permission denied); "
                      f"choose a writable directory")
  return str(p)


def _write_media(path: pathlib.Path, frames: np.ndarray, fps: float) -> None:
  from sora_jax.io import video as video_io
  if path.suffix.lower() in IMAGE_EXTS:
    from PIL import Image
    Image.fromarray(frames[0]).save(path, format="JPEG" if path.suffix.lower() in (
        ".jpg", ".jpeg") else "PNG", **({"quality": 95} if path.suffix.lower() != ".png" else {}))
  else:
    video_io.write_video(path, frames, fps=fps)


# PSNR targets (dB) tried in turn when the written file does not read back the payload: a small
# or flat clip through h264 can lose a mark at the default 40 dB (benchmarks/RESULTS.md,
# watermark: 64x64 at crf 23, 7/8 exact), so the mark is made stronger, not skipped.
VERIFY_PSNRS = (38.0, 36.0, 34.0)


def read_media(path: str | pathlib.Path) -> np.ndarray:
  """The frames (uint8 [T, H, W, 3]) of a written output: an image is one frame."""
  from sora_jax.io import video as video_io
  if pathlib.Path(path).suffix.lower() in IMAGE_EXTS:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))[None]
  return video_io.read_video(str(path))[0]


def _write_marked(path: pathlib.Path, clean: np.ndarray, marked: np.ndarray, fps: float,
                  payload: int | None) -> float | None:
  """Writes `marked`, then reads the file back: if its own encoding lost the payload, embeds
  again at the next lower PSNR target. Returns the PSNR target that held (None: no mark)."""
  from sora_jax.io import watermark
  _write_media(path, marked, fps)
  if payload is None:
    return None
  for i, psnr in enumerate((watermark.DEFAULT_PSNR, *VERIFY_PSNRS)):
    if i:
      _write_media(path, watermark.embed(clean, payload, psnr=psnr), fps)
    got, confidence, _ = watermark.extract(read_media(path))
    if got == payload and confidence > 0.99:
      return psnr
  log.warning("%s: the watermark does not read back from the written file even at %.0f dB "
              "PSNR; the output is written with it, but `sora-jax verify` may not find it",
              path.name, psnr)
  return psnr


def write_labelled(path: str, frames: np.ndarray, *, fps: float, manifest: dict | None,
                   watermark_payload: int | None, keys: tuple[str, str] | None = None,
                   unsigned: bool = False, hooks: tuple = (), prompt: str = "",
                   ingredients: tuple[str, ...] = ()) -> dict[str, Any]:
  """Screens, watermarks, writes and signs `frames` (uint8 [T, H, W, 3]); returns a report.

  Raises provenance.MissingKeys-style OutputError when there is no signing key and unsigned is
  False — before anything is written.
  """
  from sora_jax import safety
  from sora_jax.io import provenance, watermark
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise OutputError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if manifest is not None and not unsigned and keys is None:
    keys = provenance.find_keys()
    if keys is None:
      raise OutputError(
          "no C2PA signing key: every output carries signed content credentials. Make a local "
          "test key with `sora-jax keys init` (or set SORA_JAX_C2PA_CERT / SORA_JAX_C2PA_KEY), "
          "or pass --unsigned to write without credentials")
  safety.run_frame_hooks(frames, prompt, hooks)
  marked = frames
  if watermark_payload is not None and min(frames.shape[1:3]) >= (watermark.GRID // 2):
    marked = watermark.embed(frames, watermark_payload)
  elif watermark_payload is not None:
    log.warning("%dx%d frames are too small for the watermark (>= %d px a side); written "
                "without it", frames.shape[1], frames.shape[2], (watermark.GRID // 2))
    watermark_payload = None
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
  try:
    psnr = _write_marked(tmp, frames, marked, fps, watermark_payload)
    report: dict[str, Any] = {"path": str(out), "watermark": watermark_payload is not None}
    if watermark_payload is not None:
      report["watermark_psnr_db"] = psnr
    if manifest is not None and not unsigned:
      report["manifest"] = provenance.sign(str(tmp), manifest, *keys, ingredients=ingredients)
      if report["manifest"] != str(tmp):    # a sidecar: move it beside the final name
        os.replace(report["manifest"], str(out) + ".c2pa")
        report["manifest"] = str(out) + ".c2pa"
      else:
        report["manifest"] = str(out)
    os.replace(tmp, out)
  finally:
    if tmp.exists():
      tmp.unlink()
  return report
