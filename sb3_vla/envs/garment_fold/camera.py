"""``CameraObservationWrapper``: turn on GarmentFold-v0's ``rgb`` camera observation from a wrapper list.

rl-zoo builds its evaluation env without the YAML's ``env_kwargs`` unless ``--env-kwargs`` is also given on its
command line (rl_zoo3 2.9, ``ExperimentManager.eval_env_kwargs``), but it applies the YAML's ``env_wrapper`` list to
both envs. A base that reads the camera (the shipped SmallVLA) therefore asks for the camera here, in the wrapper
list, rather than through ``env_kwargs: {rgb_obs: true}``.
"""

from __future__ import annotations

import gymnasium as gym


class CameraObservationWrapper(gym.Wrapper):
    """Add the ``rgb`` camera image (``image_size``) to a GarmentFold-v0 observation, unless the env was made with
    ``rgb_obs=False`` (e.g. ``--env-kwargs rgb_obs:False`` with ``--base scripted``, which needs no camera).

    :param env: a GarmentFold-v0 env (possibly wrapped).
    :param image_size: ``(H, W)`` of the image, or one int for a square one.

    Example::

        >>> import gymnasium as gym
        >>> import sb3_vla  # registers GarmentFold-v0
        >>> env = CameraObservationWrapper(gym.make("GarmentFold-v0"), image_size=64)
        >>> env.observation_space["rgb"].shape
        (64, 64, 3)
    """

    def __init__(self, env: gym.Env, image_size: int | tuple[int, int] = 128) -> None:
        from sb3_vla.envs.garment_fold.env import GarmentFoldEnv

        raw = env.unwrapped
        if not isinstance(raw, GarmentFoldEnv):
            raise TypeError(f"CameraObservationWrapper is for GarmentFold-v0, got {type(raw).__name__}")
        if not (raw.rgb_obs_chosen and not raw.rgb_obs):
            raw.set_rgb_obs(True, image_size)
        super().__init__(env)
        self._observation_space = raw.observation_space  # the wrappers in between predate the change
