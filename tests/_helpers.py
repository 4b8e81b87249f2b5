"""Small real envs and bases for the core tests (no mocks of our own code)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_vla.bases import BaseModel, VLABatch
from sb3_vla.envs.classic_control import pendulum_swing_up as pendulum_controller  # noqa: F401 - used by tests


class ToyDictEnv(gym.Env):
    """A Dict-observation env with every key kind (image, point cloud, vectors), an instruction and a scripted
    controller; reward is minus the distance of the action to a state-dependent target."""

    metadata = {"render_modes": []}

    def __init__(self, image_size: int = 32, n_points: int = 64, action_dim: int = 3, horizon: int = 20) -> None:
        self.action_dim = action_dim
        self.horizon = horizon
        self.observation_space = spaces.Dict(
            {
                "rgb": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "pcd": spaces.Box(-1.0, 1.0, (n_points, 3), np.float32),
                "state": spaces.Box(-1.0, 1.0, (4,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.instruction = "reach the target"
        self._state = np.zeros(4, np.float32)
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        space: Any = self.observation_space
        img = np.full(space["rgb"].shape, int(127 * (self._state[0] + 1)), np.uint8)
        pcd = np.tile(self._state[:3], (space["pcd"].shape[0], 1)).astype(np.float32)
        return {"rgb": img, "pcd": pcd, "state": self._state.copy()}

    def target(self) -> np.ndarray:
        return np.clip(self._state[: self.action_dim] * 0.5, -1, 1).astype(np.float32)

    def scripted_action(self) -> np.ndarray:
        """The privileged controller: the target itself."""
        return self.target()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        self._t = 0
        self.instruction = "reach the target" if self._state[3] > 0 else "reach the other target"
        return self._obs(), {"instruction": self.instruction}

    def step(self, action: np.ndarray):
        err = float(np.linalg.norm(np.asarray(action) - self.target()))
        self._state = np.clip(self._state + 0.1 * self.np_random.standard_normal(4), -1, 1).astype(np.float32)
        self._t += 1
        truncated = self._t >= self.horizon
        return self._obs(), -err, False, truncated, {"instruction": self.instruction, "is_success": err < 0.1}


class FailingToyEnv(ToyDictEnv):
    """:class:`ToyDictEnv` that raises on an action above 10 (out of its space), like an env rejecting bad input."""

    def step(self, action: np.ndarray) -> Any:
        if np.max(action) > 10:
            raise ValueError(f"action {np.max(action)} is out of range")
        return super().step(action)


class CountingChunkBase(BaseModel):
    """A base returning chunks ``chunk[k] = obs_state_sum / 10 + k / 10`` and counting its calls."""

    def __init__(self, action_dim: int = 3, chunk_size: int = 4, embedding_dim: int = 5, key: str = "state") -> None:
        self.action_space = spaces.Box(-100.0, 100.0, (action_dim,), np.float32)
        self.chunk_size = chunk_size
        self.embedding_dim = embedding_dim
        self.key = key
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.resets: list[list[int] | None] = []
        self.instructions: list[list[str] | None] = []

    def reset(self, env_ids=None) -> None:
        self.resets.append(None if env_ids is None else list(env_ids))

    def predict(self, batch: VLABatch):
        self.calls += 1
        self.batch_sizes.append(len(batch))
        self.instructions.append(batch.instructions)
        s = batch.obs[self.key].reshape(len(batch), -1).sum(1)
        k = np.arange(self.chunk_size, dtype=np.float32)
        chunk = (s[:, None, None] + k[None, :, None]) / 10 * np.ones((1, 1, self.action_space.shape[0]), np.float32)
        emb = np.repeat(s[:, None], self.embedding_dim, axis=1).astype(np.float32)
        return chunk.astype(np.float32), emb


class NaNBase(BaseModel):
    """Returns NaN for env index ``bad_env`` from episode step ``after`` on (a faulty model)."""

    def __init__(self, action_space: spaces.Box, bad_env: int = 1, after: int = 3) -> None:
        self.action_space = action_space
        self.bad_env = bad_env
        self.after = after
        self.step = 0

    def predict(self, batch: VLABatch):
        self.step += 1
        action = np.zeros((len(batch), *self.action_space.shape), np.float32)
        if self.step > self.after:
            action[batch.env_ids == self.bad_env] = np.nan
        return action, None


def nan_base_factory(observation_space=None, action_space=None, **kwargs: Any) -> BaseModel:
    """Spec ``tests._helpers:nan_base_factory``: a base that turns NaN after 50 queries (for the train CLI)."""
    assert action_space is not None
    return NaNBase(action_space, bad_env=0, after=50)


#: LIBERO's scene assets for tests (../shared/libero-assets; read its README), or $SB3_VLA_LIBERO_ASSETS_TAR
LIBERO_ARCHIVE = Path(
    os.environ.get(
        "SB3_VLA_LIBERO_ASSETS_TAR",
        Path(__file__).resolve().parents[2] / "shared" / "libero-assets" / "libero-assets.tar.xz",
    )
)


def unpack_libero_assets(out: Path) -> str | None:
    """LIBERO's asset folder: ``$SB3_VLA_LIBERO_ASSETS``, else :data:`LIBERO_ARCHIVE` unpacked into ``out``; ``None``
    when neither exists."""
    if os.environ.get("SB3_VLA_LIBERO_ASSETS"):
        return os.environ["SB3_VLA_LIBERO_ASSETS"]
    if not LIBERO_ARCHIVE.is_file():
        return None
    with tarfile.open(LIBERO_ARCHIVE) as tar:
        tar.extractall(out, filter="data")
    return str(out / "assets")
