"""Dataset preview: a readable captioned grid video of the expected size."""
import numpy as np
from PIL import ImageFont

from configs.common import data_config
from sora_jax.data import preview
from sora_jax.io import video as video_io


def test_wrap_text_fits_and_keeps_words():
  font = ImageFont.load_default(size=preview.FONT_SIZE)
  text = "a small red circle bounces leftward " * 4 + "supercalifragilisticexpialidocious"
  lines = preview.wrap_text(text, font, 90)
  assert len(lines) > 4 and all(font.getlength(l) <= 90 for l in lines)
  assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_write_preview_mp4_grid(tmp_path):
  cfg = data_config(frames=5, height=32, width=32, batch_size=8, caption="short")
  path = preview.write_preview(cfg, str(tmp_path / "p.mp4"), num_clips=4, progress=False)
  frames, fps = video_io.read_video(path)
  cell = preview.MIN_CELL                                       # 32 px upscaled x6
  assert frames.shape[0] == 5 and fps == 8.0
  assert frames.shape[2] == 2 * cell + 3 * preview.PAD           # 2 columns
  assert frames.shape[1] > 2 * cell + 3 * preview.PAD            # 2 rows plus captions
  # The caption strip under the first clip holds light text on the dark background.
  strip = frames[2, preview.PAD + cell + 2:preview.PAD + cell + 30, preview.PAD:cell]
  assert strip.max() > 180 and np.median(strip) < 60
  # The clip area shows the clip (upscaled), not the background.
  assert frames[2, preview.PAD:preview.PAD + cell, preview.PAD:cell].std() > 5


def test_write_preview_gif_three_clips(tmp_path):
  cfg = data_config(frames=3, height=64, width=96, batch_size=2, caption="detailed")
  path = preview.write_preview(cfg, str(tmp_path / "p.gif"), num_clips=3, split="validation",
                               seed=1, progress=False)
  frames, _ = video_io.read_video(path)
  assert frames.shape[0] == 3 and frames.shape[2] == 2 * 96 * 3 + 3 * preview.PAD
