"""LIBERO tasks as residual-RL envs: suite table, non-interactive import, the robosuite compat patches, the env.

- Suite/id tests need nothing installed.
- Compat tests need robosuite 1.4.0 (``.ci/install_libero.sh``); each patched function is checked against an
  independent MuJoCo computation, and against the unpatched robosuite function failing on this MuJoCo.
- Env tests need libero and LIBERO's scene assets: a folder in ``$SB3_VLA_LIBERO_ASSETS``, or the archive
  ``../shared/libero-assets/libero-assets.tar.xz`` (or ``$SB3_VLA_LIBERO_ASSETS_TAR``), unpacked to a temp folder.
  They use ``LIBERO-Goal-7-v0`` ("turn on the stove"): its stove, knob and robot are original assets (the archive's
  stand-ins are other objects' large meshes and textures).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import sb3_vla  # noqa: F401  (registers the ids)
from sb3_vla.envs.libero import SUITES, get_suite, parse_env_id
from tests._helpers import LIBERO_ARCHIVE, unpack_libero_assets

HAS_LIBERO = importlib.util.find_spec("libero") is not None and importlib.util.find_spec("robosuite") is not None
NO_LIBERO = "libero / robosuite 1.4.0 are not installed (run .ci/install_libero.sh)"
ARCHIVE = LIBERO_ARCHIVE
TASK = ("libero_goal", 7)  # turn on the stove
IMAGE = 64
needs_libero = pytest.mark.skipif(not HAS_LIBERO, reason=NO_LIBERO)
# robosuite 1.4.0 logs with the deprecated Logger.warn at import
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


# ---------------------------------------------------------------------------------------------- ids, no libero
def test_suite_table_and_env_ids() -> None:
    assert {s.name for s in SUITES.values()} == {
        "libero_spatial",
        "libero_object",
        "libero_goal",
        "libero_10",
        "libero_90",
    }
    ids = [k for k in gym.registry if k.startswith("LIBERO-")]
    assert len(ids) == 10 * 4 + 90
    assert {"LIBERO-Spatial-0-v0", "LIBERO-Goal-7-v0", "LIBERO-10-9-v0", "LIBERO-90-89-v0"} <= set(ids)
    assert gym.spec("LIBERO-Goal-7-v0").max_episode_steps == 300
    assert gym.spec("LIBERO-Goal-7-v0").kwargs == {"suite": "libero_goal", "task_id": 7}
    suite, task_id = parse_env_id("LIBERO-Object-3-v0")
    assert (suite.name, task_id) == ("libero_object", 3)
    assert get_suite("Spatial") is get_suite("libero_spatial")
    with pytest.raises(ValueError, match="unknown LIBERO suite"):
        get_suite("libero_100")
    with pytest.raises(ValueError, match=r"task_id must be in \[0, 10\)"):
        parse_env_id("LIBERO-Goal-10-v0")


def test_import_sb3_vla_does_not_import_libero() -> None:
    code = "import sys, sb3_vla; print('libero' in sys.modules, 'robosuite' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------------- non-interactive import
@needs_libero
def test_libero_imports_without_prompting(tmp_path: Path) -> None:
    """LIBERO asks for a dataset path on stdin when it has no config.yaml; we write one instead."""
    env = {k: v for k, v in os.environ.items() if k != "LIBERO_CONFIG_PATH"}
    env.update(HOME=str(tmp_path), SB3_VLA_CACHE=str(tmp_path / "cache"))
    code = (
        "from sb3_vla.envs.libero.runtime import import_libero; import_libero(); "
        "from libero.libero import benchmark, get_libero_path; import os; "
        "print(os.environ['LIBERO_CONFIG_PATH']); print(os.path.isdir(get_libero_path('bddl_files')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == str(tmp_path / "cache" / "libero") and lines[-1] == "True"
    assert (tmp_path / "cache" / "libero" / "config.yaml").is_file()


@needs_libero
def test_bad_asset_folder_names_the_fix(tmp_path: Path) -> None:
    from sb3_vla.envs.libero.runtime import check_assets

    with pytest.raises(ValueError, match="SB3_VLA_LIBERO_ASSETS"):
        check_assets(tmp_path)


# ---------------------------------------------------------------------------------------------- compat patches
JOINTS_XML = """
<mujoco>
  <worldbody>
    <body name="free_body" pos="0 0 1"><freejoint name="free"/><geom size="0.05" mass="1"/></body>
    <body name="ball_body" pos="1 0 1"><joint name="ball" type="ball"/><geom size="0.05" mass="1"/>
      <body name="hinge_body" pos="0 0 -0.3"><joint name="hinge" type="hinge" axis="0 1 0"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03" mass="0.5"/>
        <body name="slide_body" pos="0 0 -0.3"><joint name="slide" type="slide" axis="1 0 0"/>
          <geom size="0.04" mass="0.3"/><site name="tip" pos="0 0 -0.05"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture(scope="module")
def patched() -> list[str]:
    if not HAS_LIBERO:
        pytest.skip(NO_LIBERO)
    from sb3_vla.envs.libero import compat

    return compat.apply()


def _robosuite_sim() -> Any:
    from robosuite.utils.binding_utils import MjSim

    sim = MjSim.from_xml_string(JOINTS_XML)
    sim.data.qpos[:] = np.linspace(0.1, 0.9, sim.model.nq)
    sim.data.qpos[3:7] = [1, 0, 0, 0]
    quat = np.array([0.9, 0.1, 0.3, 0.2])
    sim.data.qpos[7:11] = quat / np.linalg.norm(quat)
    sim.forward()
    return sim


@pytest.mark.parametrize("which", ["qpos", "qvel"])
def test_compat_joint_addr(patched: list[str], which: str) -> None:
    import mujoco

    from sb3_vla.envs.libero import compat

    sim = _robosuite_sim()
    m = sim.model._model
    name = f"robosuite.utils.binding_utils.MjModel.get_joint_{which}_addr"
    adr = m.jnt_qposadr if which == "qpos" else m.jnt_dofadr
    dims = {"free": 7, "ball": 4} if which == "qpos" else {"free": 6, "ball": 3}
    for joint in ("free", "ball", "hinge", "slide"):
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, joint)
        got = getattr(sim.model, f"get_joint_{which}_addr")(joint)
        expected: Any = int(adr[jid]) if joint not in dims else (int(adr[jid]), int(adr[jid]) + dims[joint])
        assert got == expected, joint
    if compat.needs_patches():
        assert name in patched
        with pytest.raises(AssertionError):  # robosuite 1.4.0's own version on this MuJoCo
            compat.original(name)(sim.model, "hinge")


def test_compat_controller_update_mass_matrix(patched: list[str]) -> None:
    """The patched ``Controller.update`` gives the arm's mass matrix, checked column by column with ``mj_mulM``."""
    import mujoco

    from sb3_vla.envs.libero import compat

    sim = _robosuite_sim()
    m, d = sim.model._model, sim.data._data

    class ArmState:  # the attributes robosuite's Controller.update reads
        new_update = True
        eef_name = "tip"
        qpos_index = [7 + 4, 7 + 4 + 1]  # hinge, slide (after the free and ball joints)
        qvel_index = [6 + 3, 6 + 3 + 1]

        def __init__(self) -> None:
            self.sim = sim

    state: Any = ArmState()
    compat.controller_update(state)
    full = np.zeros((m.nv, m.nv))
    for i in range(m.nv):
        e = np.zeros(m.nv)
        e[i] = 1.0
        column = np.zeros(m.nv)
        mujoco.mj_mulM(m, d, column, e)
        full[:, i] = column
    np.testing.assert_allclose(state.mass_matrix, full[np.ix_(state.qvel_index, state.qvel_index)], rtol=1e-10)
    np.testing.assert_allclose(state.ee_pos, d.site_xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tip")])
    assert state.J_full.shape == (6, 2) and state.new_update is False
    if compat.needs_patches():
        assert "robosuite.controllers.base_controller.Controller.update" in patched
        state.new_update = True
        with pytest.raises(AttributeError, match="qM"):  # robosuite 1.4.0's own version on this MuJoCo
            compat.original("robosuite.controllers.base_controller.Controller.update")(state)


# ---------------------------------------------------------------------------------------------- the env
@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not HAS_LIBERO:
        pytest.skip(NO_LIBERO)
    path = unpack_libero_assets(tmp_path_factory.mktemp("libero"))
    if path is None:
        pytest.skip(f"LIBERO assets not found: set SB3_VLA_LIBERO_ASSETS or provide {ARCHIVE}")
    return path


_ENVS: dict[str, Any] = {}


def make_env(assets: str, kind: str) -> Any:
    """One cached env per kind (a LIBERO build takes seconds): ``"rgb"`` (both cameras) or ``"state"`` (none)."""
    if kind not in _ENVS:
        from sb3_vla.envs.libero import make_libero_env

        cameras = ("agentview", "wrist") if kind == "rgb" else ()
        _ENVS[kind] = make_libero_env(*TASK, image_size=IMAGE, cameras=cameras, assets_path=assets, scripted_noise=0.0)
    return _ENVS[kind]


@pytest.mark.libero
def test_obs_keys_spaces_and_info(assets: str) -> None:
    env = make_env(assets, "rgb")
    space = env.observation_space
    assert isinstance(space, spaces.Dict)
    assert set(space.spaces) == {"agentview_rgb", "wrist_rgb", "ee_pos", "ee_quat", "gripper_qpos"}
    for key in ("agentview_rgb", "wrist_rgb"):
        assert space[key].dtype == np.uint8 and space[key].shape == (IMAGE, IMAGE, 3)
    for key, size in (("ee_pos", 3), ("ee_quat", 4), ("gripper_qpos", 2)):
        assert space[key].dtype == np.float32 and space[key].shape == (size,)
    assert env.action_space == spaces.Box(-1, 1, (7,), np.float32)

    obs, info = env.reset(seed=0)
    assert space.contains(obs)
    assert obs["agentview_rgb"].std() > 5 and obs["wrist_rgb"].std() > 5  # rendered scenes, not blank frames
    assert env.unwrapped.instruction == info["instruction"] == "turn on the stove"
    assert type(info["is_success"]) is bool and info["is_success"] is False
    np.testing.assert_allclose(np.linalg.norm(obs["ee_quat"]), 1.0, atol=1e-5)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert space.contains(obs)
    assert (reward, terminated, truncated, info["is_success"]) == (0.0, False, False, False)
    assert info["instruction"] == "turn on the stove"


@pytest.mark.libero
def test_agentview_image_is_upright(assets: str) -> None:
    """Our agent-view frame equals MuJoCo's own (upright) renderer's view of the same camera and state."""
    import mujoco

    env = make_env(assets, "rgb")
    obs, _ = env.reset(seed=1)
    sim = env.unwrapped.sim
    with mujoco.Renderer(sim.model._model, IMAGE, IMAGE) as renderer:
        # robosuite's options (it hides the collision geoms of group 0)
        renderer.update_scene(sim.data._data, camera="agentview", scene_option=sim._render_context_offscreen.vopt)
        reference = renderer.render().astype(np.float32)
    sim._render_context_offscreen.gl_ctx.make_current()  # give the GL context back to robosuite
    ours = obs["agentview_rgb"].astype(np.float32)
    err, err_flipped = np.abs(ours - reference).mean(), np.abs(ours[::-1] - reference).mean()
    assert err < 3.0 and err_flipped > 4 * err, (err, err_flipped)
    # and the scene reads the right way up: the (light) table fills the bottom rows, the back wall the top
    assert ours[-IMAGE // 8 :].mean() > ours[: IMAGE // 8].mean()
    env.step(np.zeros(7, dtype=np.float32))  # robosuite still renders after the context switch
    assert env.unwrapped._last_obs["agentview_rgb"].std() > 5


@pytest.mark.libero
def test_reset_from_fixed_init_states_is_reproducible(assets: str) -> None:
    env = make_env(assets, "state")
    base = env.unwrapped
    qpos = []
    for seed in (5, 5):
        obs, info = env.reset(seed=seed)
        qpos.append(base.sim.data.qpos.copy())
        first = (info["init_state_id"], obs["ee_pos"].copy())
    np.testing.assert_array_equal(qpos[0], qpos[1])
    ids = {env.reset(seed=s)[1]["init_state_id"] for s in range(8)}
    assert len(ids) > 1 and all(0 <= i < len(base.init_states) for i in ids)
    # the chosen benchmark state is what the episode starts from: same id by option -> same start
    obs, info = env.reset(options={"init_state_id": first[0]})
    np.testing.assert_array_equal(obs["ee_pos"], first[1])
    np.testing.assert_array_equal(base.sim.data.qpos, qpos[0])
    with pytest.raises(ValueError, match="init_state_id"):
        env.reset(options={"init_state_id": 999})


@pytest.mark.libero
def test_episode_does_not_depend_on_numpy_global_rng(assets: str) -> None:
    # robosuite draws from numpy's global RNG; the env seeds it, so an env seed fixes the whole episode, in any
    # process (the benchmark's evaluation in one process must match the base's in another)
    env = make_env(assets, "state")
    runs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        env.reset(seed=7)
        runs.append(np.stack([env.step(env.unwrapped.scripted_action())[0]["ee_pos"] for _ in range(40)]))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.libero
@pytest.mark.filterwarnings("ignore:.*maximum value is infinity")
def test_gymnasium_check_env(assets: str) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(make_env(assets, "state").unwrapped, skip_render_check=True)


@pytest.mark.libero
def test_zero_residual_executes_scripted_base(assets: str) -> None:
    from sb3_vla.wrappers import ResidualActionWrapper, VLAObservationWrapper

    env = make_env(assets, "state")
    inner = env.unwrapped.libero_env
    sent: list[np.ndarray] = []
    inner_step = inner.step

    def recording_step(action: np.ndarray) -> Any:
        sent.append(np.array(action))
        return inner_step(action)

    wrapped = ResidualActionWrapper(VLAObservationWrapper(env, base="scripted"), residual_scale=0.2)
    obs, _ = wrapped.reset(seed=3)
    inner.step = recording_step  # what LIBERO itself receives (after the settle steps of reset)
    try:
        for _ in range(5):
            base_in_obs = obs["vla_action"].copy()
            obs, _, _, _, info = wrapped.step(np.zeros(7, dtype=np.float32))
            np.testing.assert_array_equal(info["base_action"], base_in_obs)
            np.testing.assert_array_equal(info["executed_action"], info["base_action"])
            np.testing.assert_allclose(sent[-1], info["base_action"], rtol=0, atol=1e-7)
        assert np.abs(np.stack(sent)[:, :3]).max() > 0.1  # the scripted base is moving the arm
    finally:
        del inner.step


@pytest.mark.libero
def test_scripted_base_succeeds_and_success_is_reported(assets: str) -> None:
    env = make_env(assets, "state")
    obs, info = env.reset(seed=0)
    assert info["is_success"] is False
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
        if terminated or truncated:
            break
    assert terminated and info["is_success"] is True and reward == 1.0
    assert env.unwrapped.check_success()


@pytest.mark.libero
def test_tasks_without_scripted_base_say_so(assets: str) -> None:
    from sb3_vla.envs.libero.scripted import NoController

    with pytest.raises(NotImplementedError, match="LIBERO-Goal-7-v0"):
        NoController("open_the_middle_drawer_of_the_cabinet").act(None)


@pytest.mark.libero
def test_train_cli_on_a_libero_id(assets: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the user's command with zoo_configs/sac.yml's LIBERO-Goal-7-v0 entry (state-only obs, scripted base)
    import yaml
    from stable_baselines3 import SAC

    from sb3_vla.train import main

    monkeypatch.setenv("SB3_VLA_LIBERO_ASSETS", assets)
    args = ["--algo", "sac", "--env", "LIBERO-Goal-7-v0", "-n", "40", "--log-folder", str(tmp_path)]
    main([*args, "--eval-freq", "0", "-params", "learning_starts:20", "batch_size:8", "--seed", "3"])
    run = tmp_path / "sac" / "LIBERO-Goal-7-v0_1"
    cfg = yaml.safe_load((run / "LIBERO-Goal-7-v0" / "config.yml").read_text())
    assert cfg["env_wrapper"] == [{"sb3_vla.envs.libero.LiberoCamerasWrapper": {"cameras": []}}]
    assert cfg["buffer_size"] == 100000
    model = SAC.load(run / "LIBERO-Goal-7-v0.zip", device="cpu")
    assert set(model.observation_space.spaces) == {"ee_pos", "ee_quat", "gripper_qpos", "vla_action"}
    assert model.action_space.shape == (7,) and model.num_timesteps == 40


@pytest.mark.libero
def test_cameras_wrapper_narrows_the_observation_and_refuses_new_cameras(assets: str) -> None:
    """LiberoCamerasWrapper (the YAML's state-only entry, applied to rl-zoo's eval env too) drops camera keys."""
    from sb3_vla.envs.libero import LiberoCamerasWrapper, make_libero_env

    # its own env, last in this module and never closed: a second renderer in the process must not come before
    # the frame comparisons above
    env = _ENVS.setdefault(
        "narrowed", make_libero_env(*TASK, image_size=IMAGE, cameras=("agentview", "wrist"), assets_path=assets)
    )
    kept = LiberoCamerasWrapper(env, cameras=["wrist"])
    assert set(kept.observation_space.spaces) == {"wrist_rgb", "ee_pos", "ee_quat", "gripper_qpos"}
    obs, _ = kept.reset(seed=0)
    assert set(obs) == set(kept.observation_space.spaces) and kept.observation_space.contains(obs)
    state = LiberoCamerasWrapper(kept, cameras=[])
    obs, *_ = state.step(state.action_space.sample())
    assert set(obs) == {"ee_pos", "ee_quat", "gripper_qpos"} and state.observation_space.contains(obs)
    with pytest.raises(ValueError, match=r"cameras \['agentview'\] were not rendered"):
        LiberoCamerasWrapper(state, cameras=["agentview"])
    with pytest.raises(TypeError, match="for LIBERO-"):
        LiberoCamerasWrapper(gym.make("Pendulum-v1"))
