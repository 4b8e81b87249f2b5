"""``LiberoCamerasWrapper``: choose a LIBERO env's cameras from a wrapper list.

rl-zoo builds its evaluation env without the YAML's ``env_kwargs`` unless ``--env-kwargs`` is also given on its
command line (rl_zoo3 2.9, ``ExperimentManager.eval_env_kwargs``), but it applies the YAML's ``env_wrapper`` list to
both envs; a state-only entry therefore drops the cameras here, not through ``env_kwargs: {cameras: []}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym


class LiberoCamerasWrapper(gym.Wrapper):
    """Keep only ``cameras`` (a subset of the env's: ``()`` for the state-only observation) in a LIBERO env's
    observation; the others are no longer rendered.

    :param env: a ``LIBERO-*`` env (possibly wrapped).
    :param cameras: the cameras to keep, from ``("agentview", "wrist")``.

    Usage (needs libero and its scene assets)::

        env = LiberoCamerasWrapper(gym.make("LIBERO-Goal-7-v0"), cameras=[])
        sorted(env.observation_space.spaces)  # ['ee_pos', 'ee_quat', 'gripper_qpos']
    """

    def __init__(self, env: gym.Env, cameras: Sequence[str] = ()) -> None:
        from sb3_vla.envs.libero.env import LiberoEnv

        raw = env.unwrapped
        if not isinstance(raw, LiberoEnv):
            raise TypeError(f"LiberoCamerasWrapper is for LIBERO-* envs, got {type(raw).__name__}")
        raw.set_cameras(cameras)
        super().__init__(env)
        self._observation_space = raw.observation_space  # the wrappers in between predate the change
