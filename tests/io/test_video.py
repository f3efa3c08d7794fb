"""Video IO: codec round trips, GIF, fps resampling, and clear errors on damaged files."""
import av
import numpy as np
import pytest

from sora_jax.io import video


def _smooth_clip(t=16, h=48, w=62):
  """Moving low-frequency colour waves: what a codec should keep almost exactly."""
  tt = np.arange(t)[:, None, None]
  y = np.arange(h)[None, :, None]
  x = np.arange(w)[None, None, :]
  r = 128 + 90 * np.sin(2 * np.pi * (x + 2 * tt) / 80.0) + 0 * y
  g = 128 + 80 * np.cos(2 * np.pi * (y - tt) / 70.0) + 0 * x
  b = 128 + 70 * np.sin(2 * np.pi * (x + y + 3 * tt) / 120.0)
  return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def _psnr(a, b):
  return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def _write_raw_mp4(path, frames, fps, faststart=False):
  options = {"movflags": "faststart"} if faststart else {}
  with av.open(str(path), "w", options=options) as c:
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def test_mp4_round_trip_psnr_and_odd_size(tmp_path):
  clip = _smooth_clip()[:, :47]    # odd height
  path = video.write_video(tmp_path / "a.mp4", clip, fps=8, crf=18)
  frames, fps = video.read_video(path)
  assert fps == 8.0
  # yuv420p needs even dims: the writer pads, the reader returns the padded frame.
  assert frames.shape == (16, 48, 62, 3)
  assert _psnr(frames[:, :47], clip) > 35.0
  info = video.video_info(path)
  assert (info["width"], info["height"], info["num_frames"], info["codec"]) == (62, 48, 16, "h264")


def test_float_input_in_minus_one_one(tmp_path):
  clip = _smooth_clip(t=4)
  as_float = clip.astype(np.float32) / 127.5 - 1.0
  np.testing.assert_array_equal(video.to_uint8(as_float), clip)
  frames, _ = video.read_video(video.write_video(tmp_path / "f.mp4", as_float, fps=4))
  assert _psnr(frames, clip) > 35.0


def test_gif_round_trip(tmp_path):
  clip = _smooth_clip(t=6)
  path = video.write_video(tmp_path / "a.gif", clip, fps=10)
  frames, fps = video.read_video(path)
  assert frames.shape == clip.shape
  assert fps == pytest.approx(10.0, rel=0.01)
  assert _psnr(frames, clip) > 25.0      # 256-colour palette per frame


def test_fps_resampling_frame_count_and_order(tmp_path):
  # 30 frames at 24 fps = 1.25 s; frame i is filled with value 8 * i so we can see which was kept.
  clip = np.repeat(np.arange(30, dtype=np.uint8)[:, None, None, None] * 8, 16, 1)
  clip = np.repeat(np.repeat(clip, 16, 2), 3, 3)
  path = video.write_video(tmp_path / "r.mp4", clip, fps=24, crf=0)
  frames, fps = video.read_video(path, fps=8)
  assert fps == 8.0 and len(frames) == 10          # k / 8 < 1.25 s for k = 0..9
  kept = np.round(frames[:, 8, 8, 0] / 8.0).astype(int)
  np.testing.assert_array_equal(kept, np.arange(10) * 3)   # nearest of 24 fps to k / 8 s
  odd, _ = video.read_video(path, fps=10, max_frames=5)     # source index 2.4 k -> nearest
  np.testing.assert_array_equal(np.round(odd[:, 8, 8, 0] / 8.0).astype(int), [0, 2, 5, 7, 10])
  up, _ = video.read_video(path, fps=60, max_frames=6)      # upsampling repeats frames
  np.testing.assert_array_equal(np.round(up[:, 8, 8, 0] / 8.0).astype(int), [0, 0, 1, 1, 2, 2])
  later, _ = video.read_video(path, fps=8, start=4, max_frames=3)
  np.testing.assert_array_equal(np.round(later[:, 8, 8, 0] / 8.0).astype(int), [12, 15, 18])


def test_damaged_files_raise_video_read_error(tmp_path):
  rng = np.random.RandomState(0)
  (tmp_path / "garbage.mp4").write_bytes(rng.bytes(4000))
  with pytest.raises(video.VideoReadError, match="garbage.mp4"):
    video.read_video(tmp_path / "garbage.mp4")
  with pytest.raises(video.VideoReadError):
    video.read_video(tmp_path / "missing.mp4")
  # moov atom at the front: the cut file still opens, but half the frames are gone.
  _write_raw_mp4(tmp_path / "fs.mp4", rng.randint(0, 255, (40, 32, 32, 3), np.uint8), 8,
                 faststart=True)
  data = (tmp_path / "fs.mp4").read_bytes()
  (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
  with pytest.raises(video.VideoReadError, match="truncated"):
    video.read_video(tmp_path / "cut.mp4")
  with pytest.raises(video.VideoReadError):
    video.video_info(tmp_path / "garbage.mp4")


def test_resize_center_crop_keeps_aspect():
  # Left half black, right half white, 40x80: cropping 16x16 from the centre straddles the edge.
  frames = np.zeros((2, 40, 80, 3), np.uint8)
  frames[:, :, 40:] = 255
  out = video.resize_center_crop(frames, 16, 16)
  assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
  assert out[0, 8, 2].max() == 0 and out[0, 8, 13].min() == 255
  wide = video.resize_center_crop(frames, 10, 40)      # same aspect: a plain downscale
  assert wide.shape == (2, 10, 40, 3) and wide[0, 5, :18].max() == 0
  assert video.resize_center_crop(frames, 40, 80) is frames


def test_read_with_size_resizes_while_decoding(tmp_path):
  clip = _smooth_clip(t=5)
  path = video.write_video(tmp_path / "s.mp4", clip, fps=8)
  full, _ = video.read_video(path)
  small, _ = video.read_video(path, size=(20, 20))
  np.testing.assert_array_equal(small, video.resize_center_crop(full, 20, 20))
