"""A look at the data before training on it: a grid video of clips, each captioned beneath.

`sora-jax data preview --config=configs/demo.py --out preview.mp4` calls `write_preview`; the
clips go through the real pipeline (same crop, resize and caption mode as training).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from sora_jax.data import pipeline
from sora_jax.io import video as video_io

MIN_CELL = 192          # small clips are upscaled (nearest) to at least this many pixels high
FONT_SIZE = 13
PAD = 6
_BG = (24, 24, 24)
_FG = (235, 235, 235)


def wrap_text(text: str, font, width: int) -> list[str]:
  """Greedy word wrap to `width` pixels; a word longer than a line is cut by characters."""
  lines: list[str] = []
  for paragraph in text.splitlines() or [""]:
    line = ""
    for word in paragraph.split():
      trial = f"{line} {word}".strip()
      if font.getlength(trial) <= width:
        line = trial
        continue
      if line:
        lines.append(line)
      while font.getlength(word) > width:
        cut = max(1, next((k for k in range(len(word), 0, -1)
                           if font.getlength(word[:k]) <= width), 1))
        lines.append(word[:cut])
        word = word[cut:]
      line = word
    lines.append(line)
  return lines


def caption_panel(text: str, width: int, lines: int, font) -> np.ndarray:
  """uint8 [h, width, 3]: `text` wrapped to `width`, at most `lines` lines (then '…')."""
  wrapped = wrap_text(text, font, width - 2 * PAD)
  if len(wrapped) > lines:
    wrapped = wrapped[:lines]
    wrapped[-1] = wrapped[-1].rstrip(" .") + " …"
  line_h = _line_height(font)
  img = Image.new("RGB", (width, lines * line_h + 2 * PAD), _BG)
  draw = ImageDraw.Draw(img)
  for k, line in enumerate(wrapped):
    draw.text((PAD, PAD + k * line_h), line, fill=_FG, font=font)
  return np.asarray(img)


def _line_height(font) -> int:
  top, bottom = font.getbbox("Agy|")[1::2]
  return int(bottom - top + 4)


def grid_frames(videos: np.ndarray, captions: list[str], *, max_lines: int = 8,
                progress: bool = False) -> np.ndarray:
  """uint8 `[T, H', W', 3]`: clips `[N, T, H, W, 3]` (uint8 or [-1, 1]) in a grid, captioned."""
  videos = video_io.to_uint8(np.asarray(videos))
  n, t, h, w, _ = videos.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  scale = max(1, math.ceil(MIN_CELL / h))
  ch, cw = h * scale, w * scale
  font = ImageFont.load_default(size=FONT_SIZE)
  needed = max(len(wrap_text(c, font, cw - 2 * PAD)) for c in captions)
  panels = [caption_panel(c, cw, min(max_lines, needed), font) for c in captions]
  cell_h = ch + panels[0].shape[0]
  out = np.full((t, rows * cell_h + (rows + 1) * PAD, cols * cw + (cols + 1) * PAD, 3), _BG,
                np.uint8)
  cells = [(PAD + (i // cols) * (cell_h + PAD), PAD + (i % cols) * (cw + PAD)) for i in range(n)]
  for i, (y, x) in enumerate(cells):
    out[:, y + ch:y + cell_h, x:x + cw] = panels[i]
  for f in tqdm(range(t), desc="preview frames", disable=not progress, leave=False):
    for i, (y, x) in enumerate(cells):
      out[f, y:y + ch, x:x + cw] = videos[i, f].repeat(scale, 0).repeat(scale, 1)
  return out


def write_preview(data_cfg, out_path: str, *, num_clips: int = 4, split: str = "train",
                  seed: int = 0, progress: bool = True) -> str:
  """Renders `num_clips` clips of `split` (through the training pipeline) to a captioned grid
  video at `out_path` (.mp4, .webm or .gif). Returns the path written."""
  if num_clips < 1:
    raise ValueError(f"num_clips must be >= 1, got {num_clips}")
  cfg = data_cfg.copy_and_resolve_references()
  cfg.batch_size, cfg.num_workers = int(num_clips), 0
  it = pipeline.make_iterator(cfg, split, seed=seed, process_index=0, process_count=1,
                              num_epochs=0, drop_remainder=False)
  batch = next(it)
  captions = [str(c) for c in batch["caption"]]
  frames = grid_frames(batch["video"], captions, progress=progress)
  return video_io.write_video(out_path, frames, fps=float(cfg.fps))
