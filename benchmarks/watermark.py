"""Watermark robustness: bit accuracy and exact 48-bit payload decodes after common edits.

  python benchmarks/watermark.py                  # world + real clips at 64x64 and 256x256
  python benchmarks/watermark.py --sets=world64,real64 --psnr=38   # stronger mark

Embeds a 48-bit payload (sora_jax/io/watermark.py, default strength) into 17-frame clips: the
procedural world's and real videos' (../shared/data/real_videos, read at several start frames and
resized to the set's size), then measures on each edited copy the bit accuracy (payload + CRC-16
codeword, raw votes) and whether `extract` returns the exact payload with confidence > 0.99.
Edits: none; h264 re-encodes through PyAV (`io.video.write_video`, yuv420p, crf 23 / 28 / 35;
and x264 at a target 150 / 50 kbit/s; the bitrate each reached at 8 fps is reported); a bilinear 0.5x resize read at the small size and
scaled back up; a centre crop keeping 90 % of each side scaled back up. Also: PSNR of marked vs
clean, false detections on unmarked clips and with a wrong key, and the median time to embed /
extract one 17x64x64 clip. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import av
import numpy as np
from PIL import Image

from sora_jax.data import world
from sora_jax.io import video, watermark

REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real_videos"
FRAMES, FPS, KEY = 17, 8, 2024


def psnr(a, b) -> float:
  return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def resize(frames, h, w):
  return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR))
                   for f in frames])


def h264(frames, crf, tmp):
  """Re-encoded frames and the bitrate (kbit/s at FPS)."""
  path = video.write_video(os.path.join(tmp, "clip.mp4"), frames, fps=FPS, crf=crf)
  kbps = os.path.getsize(path) * 8 / 1000 / (len(frames) / FPS)
  return video.read_video(path)[0], kbps


def h264_bitrate(frames, kbps, tmp):
  """Re-encoded at a target bitrate (x264 ABR; `write_video` only takes crf)."""
  path = os.path.join(tmp, "clip_abr.mp4")
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    stream.bit_rate = kbps * 1000
    for f in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    container.mux(stream.encode())
  return video.read_video(path)[0], os.path.getsize(path) * 8 / 1000 / (len(frames) / FPS)


def centre_crop(frames, keep=0.9):
  _, h, w, _ = frames.shape
  ch, cw = round(h * keep), round(w * keep)
  top, left = (h - ch) // 2, (w - cw) // 2
  return resize(frames[:, top:top + ch, left:left + cw], h, w)


def clips(name: str, n: int):
  size = int(name.removeprefix("world").removeprefix("real"))
  if name.startswith("world"):
    return [world.generate_clip(seed, FRAMES, size, size)["video"] for seed in range(n)]
  out = []
  files = sorted(REAL.glob("*.mp4"))
  for i in range(n):
    f, start = files[i % len(files)], 30 * (i // len(files))
    out.append(video.read_video(f, max_frames=FRAMES, start=start, size=(size, size))[0])
  return out


def attacks(tmp):
  def half(x):
    return resize(x, x.shape[1] // 2, x.shape[2] // 2)
  return {
      "none": lambda x: (x, None),
      "h264 crf 23": lambda x: h264(x, 23, tmp),
      "h264 crf 28": lambda x: h264(x, 28, tmp),
      "h264 crf 35": lambda x: h264(x, 35, tmp),
      "h264 150 kbit/s target": lambda x: h264_bitrate(x, 150, tmp),
      "h264 50 kbit/s target": lambda x: h264_bitrate(x, 50, tmp),
      "0.5x resize, read small": lambda x: (half(x), None),
      "0.5x resize, scaled back": lambda x: (resize(half(x), *x.shape[1:3]), None),
      "90 % centre crop, scaled back": lambda x: (centre_crop(x), None),
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--sets", default="world64,real64,world256,real256")
  p.add_argument("--clips", type=int, default=8, help="clips per set")
  p.add_argument("--psnr", type=float, default=watermark.DEFAULT_PSNR,
                 help="embed's PSNR target (dB); lower buys robustness")
  args = p.parse_args(argv)
  payload = watermark.payload_for("benchmark weights digest")
  sets = args.sets.split(",")
  if not REAL.is_dir():
    print(f"(no real videos at {REAL}: real sets skipped)", file=sys.stderr)
    sets = [s for s in sets if not s.startswith("real")]
  rows, quality = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    edits = attacks(tmp)
    for name in sets:
      data = clips(name, args.clips)
      marked = [watermark.embed(x, payload, key=KEY, psnr=args.psnr) for x in data]
      q = [psnr(x, y) for x, y in zip(data, marked)]
      false = sum(watermark.extract(x, key=KEY)[1] > 0.5 for x in data)
      false += sum(watermark.extract(y, key=KEY + 1)[1] > 0.5 for y in marked)
      quality[name] = (np.mean(q), np.min(q), false, 2 * len(data))
      for attack, edit in edits.items():
        acc, exact, kbps = [], 0, []
        for y in marked:
          z, rate = edit(y)
          got, conf, _ = watermark.extract(z, key=KEY)
          acc.append(watermark.detect(z, payload, key=KEY)[0])
          exact += got == payload and conf > 0.99
          if rate is not None:
            kbps.append(rate)
        rows[name, attack] = (np.mean(acc), np.min(acc), exact, len(marked),
                              np.mean(kbps) if kbps else None)
        print(f"  {name:9s} {attack:30s} acc {np.mean(acc):.3f} exact {exact}/{len(marked)}",
              file=sys.stderr, flush=True)

  x = world.generate_clip(0, FRAMES, 64, 64)["video"]
  te, tx = [], []
  for _ in range(7):
    t0 = time.perf_counter()
    y = watermark.embed(x, payload, key=KEY)
    t1 = time.perf_counter()
    watermark.extract(y, key=KEY)
    te.append(t1 - t0)
    tx.append(time.perf_counter() - t1)

  print(f"# watermark robustness ({os.cpu_count()} CPUs visible; {args.clips} clips of {FRAMES} "
        f"frames per set; 48-bit payload + CRC-16; PSNR target {args.psnr:g} dB)\n")
  print("| edit | " + " | ".join(sets) + " |")
  print("|---|" + "---:|" * len(sets))
  for attack in edits:
    cells = []
    for name in sets:
      mean, worst, exact, n, kbps = rows[name, attack]
      rate = f" @ {kbps:.0f} kbit/s" if kbps is not None else ""
      cells.append(f"{mean:.3f} (min {worst:.2f}), {exact}/{n} exact{rate}")
    print(f"| {attack} | " + " | ".join(cells) + " |")
  print("\n| set | PSNR mean (dB) | PSNR min (dB) | false detections (unmarked + wrong key) |")
  print("|---|---:|---:|---:|")
  for name in sets:
    mean, worst, false, n = quality[name]
    print(f"| {name} | {mean:.1f} | {worst:.1f} | {false}/{n} |")
  print(f"\nembed 17x64x64: {1000 * np.median(te):.1f} ms, extract: {1000 * np.median(tx):.1f} ms "
        f"(median of 7)")


if __name__ == "__main__":
  main()
