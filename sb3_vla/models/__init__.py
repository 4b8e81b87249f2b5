"""Models of our own: :class:`~sb3_vla.models.small_vla.SmallVLA`, a small VLA trained by behaviour cloning.

The base spec prefix ``small-vla`` (:func:`small_vla_factory`):

- ``small-vla`` or ``small-vla:garment_fold``: the shipped GarmentFold-v0 weights
  (``sb3_vla/assets/garment_fold_vla.pt``, made by ``python -m sb3_vla.envs.garment_fold.pretrain``; see its
  model card ``garment_fold_vla.md``).
- ``small-vla:<path/to/weights.pt>``: weights written by ``python -m sb3_vla.envs.garment_fold.pretrain --out DIR``.

Options (``?key=value`` or ``base_kwargs``): ``exec_horizon`` (actions of each chunk executed before the next
query), ``device``. The base's action is the chunk's actions (joint targets + stage advance), its embedding the
model's trunk output. The env needs the ``rgb`` observation (``rgb_obs=True``, 128x128).

Example::

    >>> import gymnasium as gym
    >>> import sb3_vla  # registers GarmentFold-v0
    >>> from sb3_vla.bases import make_base
    >>> env = gym.make("GarmentFold-v0", rgb_obs=True, image_size=128, pcd_points=0)
    >>> base = make_base("small-vla:garment_fold", env.observation_space, env.action_space)
    >>> base.action_space.shape, base.chunk_size, base.embedding_dim
    ((61,), 2, 256)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gymnasium import spaces

from sb3_vla.bases.base import BaseModel

ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: short names of the shipped weights
SHIPPED = {"garment_fold": ASSETS / "garment_fold_vla.pt", "GarmentFold-v0": ASSETS / "garment_fold_vla.pt"}

__all__ = ["ASSETS", "SHIPPED", "make_small_vla_base", "resolve_weights", "small_vla_factory"]


def resolve_weights(name: str) -> Path:
    """The weights file of a shipped name (``garment_fold``) or a path; raises ``ValueError`` when missing."""
    name = name or "garment_fold"
    path = SHIPPED.get(name, Path(name).expanduser())
    if not path.is_file():
        raise ValueError(
            f"small-vla weights {name!r} not found (looked for {str(path)!r}); use a shipped name "
            f"({', '.join(sorted(SHIPPED))}) or a file written by "
            "'python -m sb3_vla.envs.garment_fold.pretrain --out DIR'"
        )
    return path


def make_small_vla_base(
    weights: str | Path = "garment_fold",
    observation_space: spaces.Space | None = None,
    action_space: spaces.Box | None = None,
    exec_horizon: int | None = None,
    device: str = "cpu",
) -> BaseModel:
    """A frozen :class:`~sb3_vla.models.small_vla.SmallVLA` as a base (a ``ModuleBase`` around it).

    :param weights: a shipped name (``garment_fold``) or a weights file.
    :param observation_space: the env's observation space (checked for the keys the model reads).
    :param action_space: the env's action space (the base's action space when the shapes match).
    :param exec_horizon: actions of each predicted chunk to execute (default: the trained value).
    :param device: torch device.

    Example::

        >>> import gymnasium as gym
        >>> import numpy as np
        >>> import sb3_vla  # registers GarmentFold-v0
        >>> from sb3_vla.bases import VLABatch
        >>> env = gym.make("GarmentFold-v0", rgb_obs=True, image_size=128, pcd_points=0)
        >>> base = make_small_vla_base("garment_fold", env.observation_space, env.action_space, exec_horizon=1)
        >>> obs, info = env.reset(seed=0)
        >>> batch = VLABatch(obs={k: np.asarray(v)[None] for k, v in obs.items()}, instructions=[info["instruction"]],
        ...                  env_ids=np.zeros(1, dtype=np.int64))
        >>> chunk, emb = base.predict(batch)
        >>> chunk.shape, emb.shape  # (B, exec_horizon, 61), (B, embedding_dim)
        ((1, 1, 61), (1, 256))
    """
    from sb3_vla.bases.backends.module import ModuleBase
    from sb3_vla.models.small_vla import load_small_vla

    path = resolve_weights(str(weights))
    overrides = {} if exec_horizon is None else {"exec_horizon": int(exec_horizon)}
    model = load_small_vla(path, **overrides)
    keys = (model.image_key, *model.state_keys)
    if isinstance(observation_space, spaces.Dict):
        missing = [k for k in keys if k not in observation_space.spaces]
        if missing:
            raise ValueError(
                f"small-vla:{weights} reads observation keys {missing} the env lacks (it has "
                f"{sorted(observation_space.spaces)}); for GarmentFold-v0 pass rgb_obs=True, image_size=128"
            )
    base = ModuleBase(
        model,
        observation_space=observation_space,
        fallback_action_space=action_space,
        obs_keys=keys,
        instruction_key=model.instruction_key,
        device=device,
    )
    base._name = f"small-vla:{weights}"
    return base


def small_vla_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    """The ``small-vla[:<weights>]`` spec factory (the registry's entry point for the prefix)."""
    from sb3_vla.bases.backends._common import call_with_options
    from sb3_vla.core.options import parse_query as parse_options

    name, opts = parse_options(arg)
    options = {**opts, **kwargs}
    return call_with_options(
        make_small_vla_base,
        f"small-vla:{name}",
        name or "garment_fold",
        observation_space=observation_space,
        action_space=action_space,
        **options,
    )
