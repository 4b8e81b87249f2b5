"""GarmentFold's scripted video: captioned frames, and a successful seed unless one is given."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mujoco")

from sb3_vla.envs.garment_fold import video


def test_scripted_video_is_captioned_and_holds_the_last_frame(tmp_path):
    info = video.record(str(tmp_path / "fold.gif"), seed=3, size=(48, 64), max_steps=3, fps=2)
    assert info["seed"] == 3 and info["frames"] == 1 + 3 + 2  # reset, 3 steps, the last held for a second
    frame = np.asarray(Image.open(tmp_path / "fold.gif").convert("RGB"))
    assert frame.shape[1] == 64 and frame.shape[0] > 48 + 10  # the caption band below the 48 x 64 frame
    assert frame[48:].max() > 200  # white caption text


def test_without_a_seed_the_first_successful_seed_is_recorded(tmp_path, monkeypatch):
    calls = []

    def fake_search(first_seed: int = 0, **kwargs) -> int:
        calls.append(first_seed)
        return first_seed + 2

    monkeypatch.setattr(video, "find_successful_seed", fake_search)
    info = video.record(str(tmp_path / "fold.gif"), size=(48, 64), max_steps=2, fps=2, first_seed=4)
    assert calls == [4] and info["seed"] == 6
