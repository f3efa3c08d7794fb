import numpy as np
import pytest

from sora_jax.models import patching

PATCHES = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (1, 4, 4), (2, 1, 4), (4, 2, 2)]


@pytest.mark.parametrize("patch", PATCHES)
def test_round_trip(patch):
  x = np.random.RandomState(0).randn(2, 4, 8, 8, 3).astype(np.float32)
  tokens, grid = patching.patchify(x, patch)
  assert grid == (4 // patch[0], 8 // patch[1], 8 // patch[2])
  assert tokens.shape == (2, np.prod(grid), np.prod(patch) * 3)
  np.testing.assert_array_equal(patching.unpatchify(tokens, grid, patch, 3), x)


def test_token_content_and_positions():
  x = np.random.RandomState(1).randn(1, 4, 6, 8, 2).astype(np.float32)
  patch = (2, 2, 4)
  tokens, grid = patching.patchify(x, patch)
  pos = np.asarray(patching.grid_positions(grid))
  assert pos.shape == (np.prod(grid), 3) and pos.dtype == np.int32
  for i in (0, 5, len(pos) - 1):
    it, ih, iw = pos[i]
    want = x[0, it * 2:(it + 1) * 2, ih * 2:(ih + 1) * 2, iw * 4:(iw + 1) * 4]
    np.testing.assert_array_equal(np.asarray(tokens[0, i]), want.reshape(-1))
  # Frame-major order: tokens of one frame are contiguous.
  assert (np.diff(pos[:, 0]) >= 0).all()


def test_error_speaks_user_words():
  with pytest.raises(ValueError, match=r"patch \(1, 2, 2\) does not divide latent grid "
                     r"\(5, 9, 16\): height 9 is odd"):
    patching.token_grid(5, 9, 16, (1, 2, 2))
  with pytest.raises(ValueError, match="frames 5 is not a multiple of 4"):
    patching.patchify(np.zeros((1, 5, 8, 8, 1)), (4, 2, 2))
  with pytest.raises(ValueError, match="do not match grid"):
    patching.unpatchify(np.zeros((1, 10, 4)), (1, 2, 2), (1, 2, 2), 1)
