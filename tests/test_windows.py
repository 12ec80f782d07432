"""Training windows: the paper's centre crop by default, random crops as an option, flips and window ends
drawn from the generator."""

from __future__ import annotations

import numpy as np
import pytest

from aqa_cli.data.windows import WindowConfig, centred_window, check_window, select_window
from aqa_cli.util.errors import AqaError


def stored_frames() -> np.ndarray:
    """(T, H, W, 3) frames whose every pixel says where it is: frame, row and column."""
    t, h, w = np.meshgrid(np.arange(10), np.arange(24), np.arange(30), indexing="ij")
    return np.stack([t, h, w], axis=-1).astype(np.uint8)


def test_training_crops_are_centred_by_default_like_the_paper():
    frames = stored_frames()
    window = WindowConfig(frames=8, jitter=3, crop=16, flip=True)
    centre = centred_window(frames, window)
    for seed in range(20):
        drawn = select_window(frames, window, np.random.default_rng(seed))
        assert (drawn[1, 0] == centre[1, 0]).all()  # rows: always the centre's
        columns = drawn[2, 0, 0]
        assert set(columns.tolist()) == set(centre[2, 0, 0].tolist())  # the centre's columns, maybe mirrored
        assert drawn[0, -1, 0, 0] in (7, 8, 9)  # the window ends at one of the last 3 frames


def test_random_crops_move_over_the_frame():
    frames = stored_frames()
    window = WindowConfig(frames=8, jitter=1, crop=16, flip=False, crop_mode="random")
    corners = {
        (int(drawn[1, 0, 0, 0]), int(drawn[2, 0, 0, 0]))
        for drawn in (select_window(frames, window, np.random.default_rng(seed)) for seed in range(30))
    }
    assert len(corners) > 5 and all(top <= 8 and left <= 14 for top, left in corners)


def test_an_unknown_crop_mode_is_one_clear_error():
    with pytest.raises(AqaError, match="unknown --crop-mode 'corner'"):
        check_window(WindowConfig(frames=8, crop=16, crop_mode="corner"), 10, 24, 30, "s.h5")
