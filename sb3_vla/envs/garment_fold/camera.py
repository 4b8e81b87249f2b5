"""``CameraObservationWrapper`` and ``TaskPointsObservationWrapper``: turn on GarmentFold-v0's optional
observations (the ``rgb`` camera image, the stage's ``task_points``) from a wrapper list.

rl-zoo builds its evaluation env without the YAML's ``env_kwargs`` unless ``--env-kwargs`` is also given on its
command line (rl_zoo3 2.9, ``ExperimentManager.eval_env_kwargs``), but it applies the YAML's ``env_wrapper`` list to
both envs. A base that reads the camera (the shipped SmallVLA) therefore asks for the camera here, in the wrapper
list, rather than through ``env_kwargs: {rgb_obs: true}``; so does a policy that reads the task points.
"""

from __future__ import annotations

import gymnasium as gym

from sb3_vla.envs.garment_fold.env import GarmentFoldEnv


def _garment(env: gym.Env, wrapper: str) -> GarmentFoldEnv:
    raw = env.unwrapped
    if not isinstance(raw, GarmentFoldEnv):
        raise TypeError(f"{wrapper} is for GarmentFold-v0, got {type(raw).__name__}")
    return raw


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
        raw = _garment(env, "CameraObservationWrapper")
        if not (raw.rgb_obs_chosen and not raw.rgb_obs):
            raw.set_rgb_obs(True, image_size)
        super().__init__(env)
        self._observation_space = raw.observation_space  # the wrappers in between predate the change


class TaskPointsObservationWrapper(gym.Wrapper):
    """Add ``task_points`` (the current stage's grasp keypoints and where the stage puts them, see
    :class:`~sb3_vla.envs.garment_fold.GarmentFoldEnv`) to a GarmentFold-v0 observation, for
    ``PinchResidualMap(targets_key="task_points")``.

    Example::

        >>> import gymnasium as gym
        >>> import sb3_vla  # registers GarmentFold-v0
        >>> env = TaskPointsObservationWrapper(gym.make("GarmentFold-v0", pcd_points=0))
        >>> env.observation_space["task_points"].shape
        (12,)
    """

    def __init__(self, env: gym.Env) -> None:
        raw = _garment(env, "TaskPointsObservationWrapper")
        raw.set_task_points_obs(True)
        super().__init__(env)
        self._observation_space = raw.observation_space  # the wrappers in between predate the change
