"""Reading and writing video files: PyAV for containers (mp4, webm, mov, avi, mkv), pillow for GIF.

Frames are `uint8 [T, H, W, 3]` RGB. `write_video` also takes float frames in `[-1, 1]` (the model
path's range). Reading resamples to a requested fps by nearest-timestamp selection, so a 25 fps clip
read at 8 fps keeps real motion speed instead of playing 3x faster.
"""
from __future__ import annotations

import fractions
import os
import pathlib
from typing import Any

import av
import numpy as np
from PIL import Image

PathLike = str | os.PathLike

_CONTAINER_CODECS = {".mp4": "h264", ".mov": "h264", ".mkv": "h264", ".avi": "h264",
                     ".webm": "vp9"}
_ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libaom-av1"}


class VideoReadError(RuntimeError):
  """A video file could not be read: missing, corrupt, truncated or without a video stream."""


def _stream_fps(stream) -> float:
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  return float(rate) if rate else 0.0


def _declared_frames(container, stream) -> int:
  """The frame count the container claims (0 when it doesn't say)."""
  if stream.frames:
    return int(stream.frames)
  fps = _stream_fps(stream)
  if stream.duration and stream.time_base and fps:
    return int(round(float(stream.duration * stream.time_base) * fps))
  return 0


def video_info(path: PathLike) -> dict[str, Any]:
  """Container metadata: width, height, fps, num_frames (as declared), duration (s), codec."""
  path = os.fspath(path)
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoReadError(f"{path}: no video stream")
      stream = container.streams.video[0]
      fps = _stream_fps(stream)
      n = _declared_frames(container, stream)
      if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
      elif container.duration:
        duration = container.duration / av.time_base
      else:
        duration = n / fps if fps else 0.0
      return dict(width=stream.codec_context.width, height=stream.codec_context.height,
                  fps=fps, num_frames=n, duration=duration, codec=stream.codec_context.name)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise VideoReadError(f"cannot read video {path!r}: {e}") from e


def read_video(path: PathLike, *, fps: float | None = None, max_frames: int | None = None,
               start: int = 0, size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
  """Decodes a video into `uint8 [T, H, W, 3]` RGB frames.

  Args:
    path: any container PyAV/ffmpeg reads (mp4, webm, mov, avi, mkv, gif).
    fps: output frame rate; `None` keeps the file's own. Resampling picks, for each output time
      `k / fps`, the decoded frame whose timestamp is nearest (frames are dropped or repeated).
    max_frames: stop after this many output frames (decoding stops early too).
    start: index of the first output frame (on the output timeline), e.g. to read a later clip.
    size: `(height, width)` to resize (cover) and centre-crop each frame to as it is decoded, so
      long high-resolution videos never sit in memory at full size.

  Returns:
    `(frames, fps)` with the fps of the returned frames.

  Raises:
    VideoReadError: the file is missing, unreadable, has no video stream, decodes to no frames,
      or is truncated (decodes to clearly fewer frames than its header declares).
  """
  path = os.fspath(path)
  if start < 0:
    raise ValueError(f"start must be >= 0, got {start}")
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise VideoReadError(f"cannot open video {path!r}: {e}") from e
  try:
    if not container.streams.video:
      raise VideoReadError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    src_fps = _stream_fps(stream)
    declared = _declared_frames(container, stream)
    out_fps = float(fps) if fps else src_fps
    if out_fps <= 0:
      raise VideoReadError(f"{path}: frame rate unknown; pass fps=")
    frames, decoded, stopped_early = _decode_resampled(
        container, stream, src_fps, out_fps, start, max_frames, size)
  except VideoReadError:
    raise
  except (av.FFmpegError, OSError, ValueError, EOFError) as e:
    raise VideoReadError(f"cannot decode video {path!r}: {e}") from e
  finally:
    container.close()
  if decoded == 0:
    raise VideoReadError(f"{path}: no decodable video frames (corrupt or empty file)")
  # ffmpeg conceals damage and decodes whatever survives a truncation, so compare with the header.
  if not stopped_early and declared and decoded < declared - max(2, int(0.05 * declared)):
    raise VideoReadError(
        f"{path}: truncated: decoded {decoded} of {declared} frames declared by the container")
  if not frames:
    return np.zeros((0, 0, 0, 3), np.uint8), out_fps
  return np.stack(frames), out_fps


def _decode_resampled(container, stream, src_fps, out_fps, start, max_frames, size):
  """Nearest-timestamp resampling while streaming; returns (frames, n_decoded, stopped_early)."""

  def rgb(frame):
    x = frame.to_ndarray(format="rgb24")
    return x if size is None else resize_center_crop(x[None], *size)[0]

  out: list[np.ndarray] = []
  k = start                       # next output index
  prev = None                     # (time, frame) of the last decoded frame before the target
  t0 = None
  decoded = 0
  frame_dt = 1.0 / src_fps if src_fps else 0.0
  for frame in container.decode(stream):
    t = frame.time if frame.time is not None else decoded * frame_dt
    if t0 is None:
      t0 = t
    t -= t0
    decoded += 1
    # Emit every output time that lies closer to `prev` than to this frame.
    while prev is not None and k / out_fps <= (prev[0] + t) / 2:
      out.append(rgb(prev[1]))
      k += 1
      if max_frames is not None and len(out) >= max_frames:
        return out, decoded, True
    prev = (t, frame)
  if prev is not None:
    # The last frame covers times up to its end (its timestamp plus one source frame).
    end = prev[0] + (frame_dt if frame_dt else 1.0 / out_fps)
    last = None
    while k / out_fps < end - 1e-9:
      if last is None:
        last = rgb(prev[1])
      out.append(last)
      k += 1
      if max_frames is not None and len(out) >= max_frames:
        break
  return out, decoded, False


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """uint8 stays; floats are taken to be in [-1, 1] and mapped to [0, 255]."""
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames
  if not np.issubdtype(frames.dtype, np.floating):
    raise ValueError(f"frames must be uint8 or float in [-1, 1], got dtype {frames.dtype}")
  return np.clip(np.round((frames.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Scales uint8 `[T, h, w, 3]` to cover `height x width` (aspect kept), then crops the centre.

  Pillow's bilinear filter widens its support when shrinking, so downscaling is antialiased.
  """
  frames = np.asarray(frames)
  t, h, w = frames.shape[:3]
  if (h, w) == (height, width):
    return frames
  scale = max(height / h, width / w)
  nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
  top, left = (nh - height) // 2, (nw - width) // 2
  box = (left, top, left + width, top + height)
  out = np.empty((t, height, width, 3), np.uint8)
  for i in range(t):
    img = Image.fromarray(frames[i]).resize((nw, nh), Image.Resampling.BILINEAR)
    out[i] = np.asarray(img.crop(box))
  return out


def write_video(path: PathLike, frames: np.ndarray, fps: float = 8, codec: str | None = None,
                crf: int = 18) -> str:
  """Writes `[T, H, W, 3]` frames (uint8, or float in [-1, 1]); the extension picks the format.

  `.gif` is written with pillow (palette per frame, so expect ~30 dB). Other extensions go through
  PyAV: `.mp4/.mov/.mkv/.avi` default to h264, `.webm` to vp9; pixels are yuv420p, so odd heights
  or widths are padded by repeating the last row/column. `crf` is the x264/vpx quality (lower is
  better; 18 is visually lossless). Returns the path written.
  """
  path = pathlib.Path(path)
  frames = to_uint8(frames)
  if frames.ndim == 3:
    frames = frames[None]
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got shape {frames.shape}")
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  path.parent.mkdir(parents=True, exist_ok=True)
  ext = path.suffix.lower()
  if ext == ".gif":
    _write_gif(path, frames, fps)
    return str(path)
  if ext not in _CONTAINER_CODECS:
    raise ValueError(f"unknown video extension {ext!r} for {path}; use .mp4, .webm, .mov, .mkv, "
                     ".avi or .gif")
  codec = codec or _CONTAINER_CODECS[ext]
  _write_av(path, frames, fps, codec, crf)
  return str(path)


def _write_gif(path: pathlib.Path, frames: np.ndarray, fps: float) -> None:
  images = [Image.fromarray(f) for f in frames]
  # GIF delays are in 10 ms units; pillow rounds the millisecond duration.
  duration = max(20, int(round(1000.0 / fps)))
  images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0,
                 optimize=False, disposal=1)


def _write_av(path: pathlib.Path, frames: np.ndarray, fps: float, codec: str, crf: int) -> None:
  t, h, w, _ = frames.shape
  ph, pw = h % 2, w % 2
  if ph or pw:
    frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  rate = fractions.Fraction(fps).limit_denominator(1001)
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream(_ENCODERS.get(codec, codec), rate=rate)
    stream.width, stream.height = w + pw, h + ph
    stream.pix_fmt = "yuv420p"
    options = {"crf": str(crf)}
    if codec == "vp9":
      options["b:v"] = "0"      # constant-quality mode
    stream.options = options
    for f in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
