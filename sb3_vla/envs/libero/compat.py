"""Run robosuite 1.4.0 (pinned by LIBERO) on MuJoCo >= 3.x, in the same install as MuJoCo 4 envs.

robosuite 1.4.0 was written against MuJoCo 2.3 / 3.0 bindings. On newer MuJoCo three things break, all in code
paths every LIBERO task runs:

1. ``robosuite.utils.binding_utils.MjModel.get_joint_qpos_addr`` and ``get_joint_qvel_addr`` test
   ``joint_type in (mjtJoint.mjJNT_HINGE, mjtJoint.mjJNT_SLIDE)``. ``MjModel.jnt_type[i]`` is now a ``numpy.int32``
   and the enum's ``__eq__`` no longer accepts it, so the ``in`` test is ``False`` and the assertion fails while the
   robot is set up. The patched methods compare ``int(joint_type)`` with the enum values.
2. ``MjData.qM`` was removed (the inertia matrix moved to ``MjData.M`` in a new sparse layout) and
3. ``mujoco.mj_fullM(m, dst, qM)`` became ``mj_fullM(m, d, dst)``: both are used once, in
   ``robosuite.controllers.base_controller.Controller.update`` (the dense joint-space mass matrix every OSC step
   needs). The patched ``update`` computes the same quantities with the current API.

:func:`apply` installs the patches (idempotent) and is called by :mod:`sb3_vla.envs.libero` before LIBERO builds an
env; nothing is patched by ``import sb3_vla``. On a MuJoCo whose bindings still have ``MjData.qM`` it does nothing.
Each patched function has a test in ``tests/test_libero.py`` against an independent MuJoCo computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Names of the robosuite functions :func:`apply` replaced (empty until it has run, or when none were needed).
PATCHED: list[str] = []
_ORIGINALS: dict[str, Any] = {}


def needs_patches() -> bool:
    """Whether the installed MuJoCo bindings lack the API robosuite 1.4.0 uses (``MjData.qM``)."""
    import mujoco

    return not hasattr(mujoco.MjData, "qM")


def _joint_dim(joint_type: Any, free: int, ball: int) -> int:
    import mujoco

    jt = int(joint_type)
    if jt == int(mujoco.mjtJoint.mjJNT_FREE):
        return free
    if jt == int(mujoco.mjtJoint.mjJNT_BALL):
        return ball
    if jt not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
        raise ValueError(f"unknown MuJoCo joint type {jt}")
    return 1


def get_joint_qpos_addr(self: Any, name: str) -> int | tuple[int, int]:
    """qpos address of joint ``name``: an int for 1-D joints, ``(start, end)`` for free (7) and ball (4) joints."""
    joint_id = self.joint_name2id(name)
    addr = int(self.jnt_qposadr[joint_id])
    ndim = _joint_dim(self.jnt_type[joint_id], free=7, ball=4)
    return addr if ndim == 1 else (addr, addr + ndim)


def get_joint_qvel_addr(self: Any, name: str) -> int | tuple[int, int]:
    """qvel address of joint ``name``: an int for 1-D joints, ``(start, end)`` for free (6) and ball (3) joints."""
    joint_id = self.joint_name2id(name)
    addr = int(self.jnt_dofadr[joint_id])
    ndim = _joint_dim(self.jnt_type[joint_id], free=6, ball=3)
    return addr if ndim == 1 else (addr, addr + ndim)


def full_mass_matrix(sim: Any) -> np.ndarray:
    """Dense ``(nv, nv)`` joint-space inertia matrix of a robosuite ``MjSim`` (after ``sim.forward()``)."""
    import mujoco

    nv = sim.model.nv
    dense = np.zeros((nv, nv), dtype=np.float64)
    mujoco.mj_fullM(sim.model._model, sim.data._data, dense)
    return dense


def controller_update(self: Any, force: bool = False) -> None:
    """``robosuite.controllers.base_controller.Controller.update`` on the current MuJoCo API.

    Same state as robosuite 1.4.0 computes (end-effector pose and velocity, joint state, Jacobians, the arm's block
    of the mass matrix); only the mass matrix call differs. Skipped unless ``self.new_update`` or ``force``.
    """
    if not (self.new_update or force):
        return
    sim = self.sim
    sim.forward()
    site = sim.model.site_name2id(self.eef_name)
    self.ee_pos = np.array(sim.data.site_xpos[site])
    self.ee_ori_mat = np.array(sim.data.site_xmat[site].reshape(3, 3))
    self.ee_pos_vel = np.array(sim.data.get_site_xvelp(self.eef_name))
    self.ee_ori_vel = np.array(sim.data.get_site_xvelr(self.eef_name))
    self.joint_pos = np.array(sim.data.qpos[self.qpos_index])
    self.joint_vel = np.array(sim.data.qvel[self.qvel_index])
    self.J_pos = np.array(sim.data.get_site_jacp(self.eef_name).reshape(3, -1)[:, self.qvel_index])
    self.J_ori = np.array(sim.data.get_site_jacr(self.eef_name).reshape(3, -1)[:, self.qvel_index])
    self.J_full = np.array(np.vstack([self.J_pos, self.J_ori]))
    self.mass_matrix = full_mass_matrix(sim)[np.ix_(self.qvel_index, self.qvel_index)]
    self.new_update = False


def apply() -> list[str]:
    """Patch robosuite 1.4.0 for the installed MuJoCo (idempotent); returns the names of the patched functions.

    Import-time safe: it imports robosuite (not LIBERO) and only replaces attributes on robosuite classes.
    """
    if PATCHED or not needs_patches():
        return list(PATCHED)
    import robosuite
    from robosuite.controllers.base_controller import Controller
    from robosuite.utils.binding_utils import MjModel

    if not robosuite.__version__.startswith("1.4."):
        raise ImportError(
            f"sb3_vla.envs.libero.compat patches robosuite 1.4.x (pinned by LIBERO), found robosuite "
            f"{robosuite.__version__}; install it with: pip install robosuite==1.4.0 --no-deps"
        )
    targets = [
        (MjModel, "get_joint_qpos_addr", get_joint_qpos_addr),
        (MjModel, "get_joint_qvel_addr", get_joint_qvel_addr),
        (Controller, "update", controller_update),
    ]
    for owner, attr, fn in targets:
        name = f"{owner.__module__}.{owner.__name__}.{attr}"
        _ORIGINALS[name] = owner.__dict__[attr]
        setattr(owner, attr, fn)
        PATCHED.append(name)
    return list(PATCHED)


def original(name: str) -> Any:
    """The robosuite function :func:`apply` replaced under ``name`` (an entry of :data:`PATCHED`), for tests."""
    return _ORIGINALS[name]
