"""Privileged scripted controllers for LIBERO tasks: the ``scripted`` base of a residual run.

A controller reads object poses from the simulator (privileged state a VLA does not get) and outputs the env's 7-D
action (end-effector delta, gripper) by following waypoints with a proportional law. Implemented:

- **turn on the stove** (``LIBERO-Goal-7-v0``, and any task whose goal is ``(turnon <flat_stove>)``): with the
  gripper closed, lower the fingertips next to the stove knob's ridge, 3 cm on the robot's side of the knob axis,
  and sweep them 12 cm along -y, which turns the knob counter-clockwise past LIBERO's "on" angle (0.5 rad); lift
  and retry while the knob is not on.

Noise (``noise``, metres): each episode draws a Gaussian offset of the push line with this std (the knob ridge is
about 2.5 cm long, so a few cm of offset makes pushes miss), and every step adds Gaussian noise of ``noise / 0.05``
(action units) to the arm's delta action. Measured success rates (``benchmarks/libero.py``) are in
``benchmarks/RESULTS.md``; the default noise is :data:`DEFAULT_NOISE`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Default noise std (m) of the scripted base.
DEFAULT_NOISE = 0.02
#: Metres per unit of the OSC delta-position action (robosuite's OSC_POSE output_max).
POS_SCALE = 0.05


class NoController:
    """Stands in for tasks without a scripted controller."""

    def __init__(self, task: str) -> None:
        self.task = task

    def reset(self, seed: int) -> None:
        pass

    def act(self, env: Any) -> np.ndarray:
        raise NotImplementedError(
            f"no scripted controller for LIBERO task {self.task!r}; scripted bases exist for tasks whose goal is "
            "'turn on the stove' (e.g. LIBERO-Goal-7-v0). Use another base (--base zero, hf:..., sb3:...)"
        )


class StoveKnobController:
    """Turn a LIBERO flat stove's knob on by pushing its ridge (see the module docstring).

    :param stove: name of the stove object in the scene (``flat_stove_1``).
    :param noise: std (m) of the per-episode push-line offset and of the per-step arm action noise.
    """

    #: Fingertip-centre height above the knob's base for the push, lever arm (-x) and sweep along y (m).
    PUSH_HEIGHT = 0.04
    LEVER = -0.03
    SWEEP = (0.07, -0.05)
    APPROACH_HEIGHT = 0.11
    ON_ANGLE = 0.6  # a margin over LIBERO's 0.5 rad so that a slight spring-back still counts

    def __init__(self, stove: str, noise: float = DEFAULT_NOISE) -> None:
        if noise < 0:
            raise ValueError(f"scripted noise must be >= 0, got {noise}")
        self.stove = stove
        self.noise = float(noise)
        self.rng = np.random.default_rng(0)
        self.offset = np.zeros(2)
        self.phase = 0
        self._ids: tuple[int, int] | None = None

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.offset = self.rng.normal(0.0, self.noise, size=2)
        self.phase = 0
        self._ids = None

    def _knob(self, env: Any) -> tuple[np.ndarray, float]:
        import mujoco

        m, d = env.sim.model._model, env.sim.data._data
        if self._ids is None:
            body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{self.stove}_button")
            joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{self.stove}_button")
            if body < 0 or joint < 0:
                raise ValueError(f"stove knob {self.stove}_button not found in the LIBERO scene")
            self._ids = (body, int(m.jnt_qposadr[joint]))
        body, qadr = self._ids
        return np.array(d.xpos[body]), float(d.qpos[qadr])

    def waypoints(self, knob: np.ndarray) -> list[np.ndarray]:
        x = knob[0] + self.LEVER + self.offset[0]
        y0, y1 = knob[1] + self.SWEEP[0] + self.offset[1], knob[1] + self.SWEEP[1] + self.offset[1]
        top, low = knob[2] + self.APPROACH_HEIGHT, knob[2] + self.PUSH_HEIGHT
        return [np.array([x, y0, top]), np.array([x, y0, low]), np.array([x, y1, low]), np.array([x, y1, top])]

    def act(self, env: Any) -> np.ndarray:
        ee = np.asarray(env.sim.data.site_xpos[env.sim.model.site_name2id("gripper0_grip_site")], dtype=np.float64)
        knob, angle = self._knob(env)
        wps = self.waypoints(knob)
        if angle >= self.ON_ANGLE:
            target = ee.copy()  # done: hold still
        else:
            if self.phase < len(wps) - 1 and np.linalg.norm(wps[self.phase] - ee) < 0.01:
                self.phase += 1
            elif self.phase == len(wps) - 1 and np.linalg.norm(wps[-1] - ee) < 0.015:
                self.phase = 0  # the push missed: go round again
            target = wps[self.phase]
        action = np.zeros(7, dtype=np.float32)
        action[:3] = np.clip(1.5 * (target - ee) / POS_SCALE, -0.6, 0.6)
        if self.noise > 0:
            action[:3] += self.rng.normal(0.0, self.noise / POS_SCALE, size=3)
        action[:6] = np.clip(action[:6], -1.0, 1.0)
        action[6] = 1.0  # closed fingers make a stiff pusher
        return action


def make_controller(env: Any, noise: float | None = None) -> Any:
    """The scripted controller for ``env``'s task, or a :class:`NoController` that explains there is none."""
    goal = env.robosuite_env.parsed_problem.get("goal_state", [])
    n = DEFAULT_NOISE if noise is None else float(noise)
    if len(goal) == 1 and goal[0][0].lower() == "turnon" and "flat_stove" in goal[0][1]:
        return StoveKnobController(goal[0][1], noise=n)
    return NoController(env.task.name)
