"""TextToVideo: deterministic for a seed, any size the VAE and patch allow, clear size errors,
prompts at their own sizes, and every frame-conditioned mode keeping what it was given."""
import jax
import numpy as np
import pytest

from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.pipeline import TextToVideo
from sora_jax.systems.vae import VAESystem, to_model_range


@pytest.fixture(scope="module")
def t2v(t2v_tiny):
  return t2v_tiny


def test_same_seed_same_video_other_seed_other_video(t2v):
  a = t2v("a red circle bounces to the right", seed=1)
  b = t2v("a red circle bounces to the right", seed=1)
  c = t2v("a red circle bounces to the right", seed=2)
  assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert np.abs(a.astype(int) - c.astype(int)).mean() > 0.5


def test_prompt_changes_the_video(t2v):
  a, b = t2v(["a red circle falls", "a blue star grows"], seed=0)
  assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.1


def test_unseen_sizes_and_durations(t2v):
  # RoPE-3D positions extend to grids never trained on: longer and wider than training.
  v = t2v("a green square falls", num_frames=13, height=32, width=64, num_steps=2)
  assert v.shape == (13, 32, 64, 3)
  img = t2v("a green square", num_frames=1, num_steps=2)  # text-to-image: a 1-frame video
  assert img.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("kw,key", [({"num_frames": 8}, "--frames=8"),
                                    ({"height": 36}, "--height=36"),
                                    ({"width": 40}, "model.patch")])
def test_impossible_sizes_name_the_argument(t2v, kw, key):
  with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
    t2v("a red circle", **kw)


def test_aspect_and_seconds_resolve_to_representable_sizes(t2v):
  """Height/width snap to multiples of VAE x patch (16 here), frames to 1 + 4k at the model's
  fps; the short side keeps the training short side when only an aspect is given."""
  assert t2v.config.data.fps == 8
  assert t2v.resolve_size(aspect="16:9") == (None, 32, 64)
  assert t2v.resolve_size(aspect="9:16") == (None, 64, 32)
  assert t2v.resolve_size(aspect="4:3", width=64) == (None, 48, 64)
  assert t2v.resolve_size(aspect="1:1", height=48) == (None, 48, 48)
  assert t2v.resolve_size(seconds=2)[0] == 17 and t2v.resolve_size(seconds=0.01)[0] == 1
  for kw, msg in [({"aspect": "16x9"}, "WIDTH:HEIGHT"), ({"seconds": -1}, "positive"),
                  ({"seconds": 1, "num_frames": 9}, "both given"),
                  ({"aspect": "1:1", "height": 32, "width": 32}, "one of them")]:
    with pytest.raises(config_lib.ConfigError, match=msg):
      t2v.resolve_size(**kw)
  with pytest.raises(config_lib.ConfigError, match="use --height=32 or 48"):
    t2v("a red circle", height=40)


def test_many_prompts_each_at_its_own_size(t2v):
  out = t2v.many(["a red circle falls", "a blue star grows", "a green square"],
                 [{"aspect": "16:9"}, {}, {"aspect": "2:1"}], num_steps=1)
  assert [v.shape for v in out] == [(9, 32, 64, 3), (9, 32, 32, 3), (9, 32, 64, 3)]
  np.testing.assert_array_equal(out[1], t2v("a blue star grows", num_steps=1))
  # one sampler call for both 32x64 prompts: the pair is the batch of two
  np.testing.assert_array_equal(np.stack([out[0], out[2]]), t2v(
      ["a red circle falls", "a green square"], height=32, width=64, num_steps=1))
  with pytest.raises(config_lib.ConfigError, match="one size per prompt"):
    t2v.many(["a", "b"], [{}])


def test_ddpm_run_samples_with_any_step_count(t2v):
  # 61 DDIM steps once gave 62 timesteps (the last -1) and crashed the scan.
  config = t2v.config.copy_and_resolve_references().unlock()
  config.diffusion.objective, config.sample.sampler = "eps", "ddim"
  eps = TextToVideo(runs.t2v_system(config, vae=(t2v.system.vae, t2v.system.vae_params)),
                    t2v.params, on_long="warn")
  v = eps("a red circle falls", num_frames=1, num_steps=61)
  assert v.shape == (1, 32, 32, 3) and v.std() > 0


def test_chunked_vae_decode_through_the_public_api(t2v):
  # vae.encode_chunk > 0: latents decode chunk by chunk (flat memory), equal to one pass.
  config = t2v.config.copy_and_resolve_references().unlock()
  config.vae.encode_chunk = 1
  chunked = TextToVideo(runs.t2v_system(config, vae=(VAESystem(config), t2v.system.vae_params)),
                        t2v.params, on_long="warn")
  assert chunked.system.vae.chunked and not t2v.system.vae.chunked
  a = t2v("a red circle falls", num_steps=2, seed=5)
  b = chunked("a red circle falls", num_steps=2, seed=5)
  assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_modes_keep_what_they_were_given(t2v):
  """9 frames of 32x32 -> 3 latent frames; one compiled conditional sampler serves every mode."""
  r = np.random.RandomState(0)
  video = r.randint(0, 255, (9, 32, 32, 3)).astype(np.uint8)
  lat = t2v.encode(video)
  kw = dict(num_steps=2, return_latents=True)
  prompt = "a red circle bounces to the right"
  out = t2v.generate(prompt, known={0: lat[:1]}, **kw)            # image-to-video's condition
  np.testing.assert_array_equal(out[0], lat[0])
  assert np.abs(out[1:] - lat[1:]).mean() > 0.1                   # the rest is generated
  out = t2v.generate(prompt, known={-2: lat[1:]}, **kw)           # extend backward
  np.testing.assert_array_equal(out[1:], lat[1:])
  out = t2v.generate(prompt, known={0: lat[:1], 2: lat[2:]}, **kw)  # connect / keyframes
  np.testing.assert_array_equal(out[[0, 2]], lat[[0, 2]])
  out = t2v.generate(prompt, loop=True, **kw)
  np.testing.assert_array_equal(out[0], out[-1])
  with pytest.raises(ValueError, match="do not fit"):
    t2v.generate(prompt, known={2: lat}, **kw)


def test_pixel_modes_and_edit(t2v):
  r = np.random.RandomState(1)
  clip = r.randint(0, 255, (5, 32, 32, 3)).astype(np.uint8)
  v = t2v.extend("a blue square falls", clip, num_steps=1)
  assert v.shape == (9, 32, 32, 3)
  v = t2v.retake("a blue square falls", np.concatenate([clip, clip[1:]]), 5, 9, num_steps=1)
  assert v.shape == (9, 32, 32, 3)
  with pytest.raises(config_lib.ConfigError, match="retake"):
    t2v.retake("a blue square falls", clip, 3, 12, num_steps=1)
  video = t2v.generate("a red circle falls", num_steps=2)
  near = t2v.generate("a blue circle falls", edit=video, strength=0.05, num_steps=6,
                      return_latents=True)
  far = t2v.generate("a blue circle falls", edit=video, strength=1.0, num_steps=6,
                     return_latents=True)
  enc = t2v.encode(video)
  assert np.abs(near - enc).mean() < 0.5 * np.abs(far - enc).mean()


def test_cli_modes_check_their_arguments_and_inputs(t2v, tmp_path):
  """`sora-jax sample/demo` mode flags: one mode at a time, each with what it needs; inputs are
  cropped to a representable size and cut to 1 + 4k frames."""
  from PIL import Image

  from sora_jax import sample_job
  from sora_jax.io import video as video_io
  for kw, msg in [({"image": "a.png", "loop": True}, "one mode at a time"),
                  ({"extend": "forward"}, "need --video"), ({"strength": 0.3}, "for --edit"),
                  ({"connect": "only_one.mp4"}, "two videos")]:
    with pytest.raises(config_lib.ConfigError, match=msg):
      sample_job.run_mode(t2v, "a red circle", **kw)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sample_job.run_mode(t2v, "a red circle", image=str(tmp_path / "missing.png"))
  for kw in ({"overlap": 2}, {"extend_guidance": 2.0}):
    with pytest.raises(config_lib.ConfigError, match="with --windows"):
      sample_job.run(t2v, "a red circle", str(tmp_path / "o.mp4"), **kw)
  with pytest.raises(config_lib.ConfigError, match="--extend_guidance"):
    t2v.resolve_extend_guidance(float("nan"))
  png = tmp_path / "wide.png"
  Image.fromarray(np.zeros((45, 100, 3), np.uint8)).save(png)
  assert sample_job.load_input(t2v, str(png)).shape == (1, 32, 64, 3)   # 2.2:1 -> 32x64
  mp4 = tmp_path / "clip.mp4"
  video_io.write_video(str(mp4), np.zeros((12, 32, 32, 3), np.uint8), fps=8)
  assert sample_job.load_input(t2v, str(mp4)).shape == (9, 32, 32, 3)  # 12 frames -> 1 + 4*2


def test_a_long_video_holds_the_last_latent_frame_and_decodes_as_it_goes(t2v, monkeypatch):
  """Window 2 holds window 1's last latent frame (not its frames re-encoded: that round trip
  drifts the colour) at its own CFG scale, and the windows decoded one by one, caches carried,
  give the frames of one decode of all the kept latents."""
  seen, generate = [], t2v._generate_cond
  def spy(params, tokens, mask, rng, frames, *rest):
    out = generate(params, tokens, mask, rng, frames, *rest)
    seen.append((frames, np.asarray(out), rest[3]))                 # rest[3]: the CFG scale
    return out
  monkeypatch.setattr(t2v, "_generate_cond", spy)
  v = t2v.long_video("a red circle falls", num_frames=17, window=3, num_steps=1,
                     extend_guidance=1.5)                               # 2 windows
  (first, out1, g1), (second, out2, g2) = seen
  assert g1 == t2v.config.sample.guidance_scale and g2 == 1.5
  assert not np.asarray(first.mask).any()
  assert np.asarray(second.mask).tolist() == [[True, False, False]]
  np.testing.assert_array_equal(np.asarray(second.known)[0, 0], out1[0, -1])
  kept = np.concatenate([out1, out2[:, 1:]], axis=1)
  whole = np.asarray(t2v.system.decode(jax.numpy.asarray(kept)))[0]
  assert np.abs(to_model_range(v) - whole).max() <= 1.5 / 127.5   # uint8 rounding only


def test_long_video_in_windows_and_its_drift_report(t2v):
  """25 frames from 3-latent-frame windows overlapping by one (3 windows), decoded chunk by
  chunk; the drift report scores ~1 s windows and the frame change at the generation seams."""
  from sora_jax.eval import t2v_eval
  v = t2v.long_video("a red circle falls", num_frames=25, num_steps=1)
  assert v.shape == (25, 32, 32, 3) and v.dtype == np.uint8
  assert t2v_eval.window_seams(7, 3, 1, 4) == [9, 17]
  r = t2v_eval.drift_report(v, "a red circle falls", fps=8, window_s=1.0, seams=[9, 17])
  assert len(r["windows"]) == 3 and r["windows"][1]["start_s"] == 1.0
  assert r["seam_change"] is not None and r["inside_change"] is not None
  with pytest.raises(config_lib.ConfigError, match="overlap"):
    t2v.long_video("a red circle falls", num_frames=25, overlap=3)
  two = t2v.long_videos(["a red circle falls", "a blue square moves left"], num_frames=25,
                        num_steps=1)
  assert [x.shape for x in two] == [(25, 32, 32, 3)] * 2 and not np.array_equal(*two)


def test_object_weight_reweighs_training_not_the_held_out_loss(t2v):
  config = t2v.config.copy_and_resolve_references()
  with config.unlocked():
    config.diffusion.object_weight = 4.0
  weighted = runs.t2v_system(config)
  shape = (1, *t2v.system.latent_shape)
  lat = np.zeros(shape, np.float32)
  lat[:, :, 1, 1] = 3.0                      # one object latent pixel a frame on a flat backdrop
  L = int(config.text.max_len)
  batch = {"latents": lat, "tokens": np.ones((1, L), np.int32),
           "text_mask": np.ones((1, L), bool)}
  rng = jax.random.key(3)
  plain_loss = t2v.system.loss(t2v.params, batch, rng)[0]
  weighted_loss = weighted.loss(t2v.params, batch, rng)[0]
  assert abs(float(weighted_loss) - float(plain_loss)) > 1e-4 * float(plain_loss)
  t = np.full((1,), 0.5, np.float32)         # held-out evaluation: the plain mean, comparable
  np.testing.assert_allclose(weighted.loss(t2v.params, batch, rng, t=t)[0],
                             t2v.system.loss(t2v.params, batch, rng, t=t)[0], rtol=1e-6)
