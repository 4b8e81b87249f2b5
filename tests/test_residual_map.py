"""Residuals composed in another space: the generic ResidualMap plumbing and GarmentFold's pinch-point map, and the
scripted folder's command frame that lets such corrections through."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

pytest.importorskip("mujoco")

import sb3_vla  # noqa: F401  (registers the env ids)
from sb3_vla import make_residual_vec_env
from sb3_vla.bases import VLABatch
from sb3_vla.bases.backends.sb3_policy import make_sb3_base
from sb3_vla.core.residual_map import compose_mapped
from sb3_vla.envs.garment_fold import (
    PHASED_PINCH_RESIDUAL_SCALE,
    PINCH_RESIDUAL_SCALE,
    RELATIVE_PINCH_RESIDUAL_SCALE,
    GarmentFoldEnv,
    PinchResidualMap,
    TaskPointsObservationWrapper,
)
from sb3_vla.envs.garment_fold.oracle import RELATIVE_RULE_FRACTION, relative_rule
from sb3_vla.envs.garment_fold.scripted import CARRY, CLOSE, DESCEND
from sb3_vla.wrappers import (
    MAPPED_ACTION_KEY,
    ResidualActionWrapper,
    ResidualConfig,
    ResidualMap,
    VLAObservationWrapper,
)


@pytest.fixture(scope="module")
def pinch_map() -> PinchResidualMap:
    return PinchResidualMap()


def _base_action(seed: int = 0) -> np.ndarray:
    env = GarmentFoldEnv(pcd_points=0)
    env.reset(seed=seed)
    for _ in range(5):  # away from the home pose
        env.step(env.scripted_action())
    return env.scripted_action().astype(np.float64)[None]


def test_zero_delta_is_the_base_action(pinch_map: PinchResidualMap) -> None:
    base = _base_action()
    np.testing.assert_array_equal(pinch_map(base, np.zeros((1, 7))), base)


def test_pinch_offset_moves_that_pinch_point_only(pinch_map: PinchResidualMap) -> None:
    base = _base_action()
    delta = np.array([[0.03, -0.02, 0.01, 0.0, 0.0, 0.0, 0.4]])
    out = pinch_map(base, delta)
    before, after = pinch_map.observe(base)[0], pinch_map.observe(out)[0]
    np.testing.assert_allclose(after[:3] - before[:3], delta[0, :3], atol=2e-3)  # IK to ~mm
    np.testing.assert_allclose(after[3:6], before[3:6], atol=1e-9)  # right arm untouched
    np.testing.assert_array_equal(out[0, 6:30], base[0, 6:30])  # hand joints are the base's
    np.testing.assert_array_equal(out[0, 30:60], base[0, 30:60])
    assert out[0, 60] == pytest.approx(base[0, 60] + 0.4)
    # the hand keeps its orientation
    ik, lo, hi = pinch_map.ik, pinch_map.ik.lo, pinch_map.ik.hi
    q0 = lo + 0.5 * (base[0, :6] + 1.0) * (hi - lo)
    q1 = lo + 0.5 * (out[0, :6] + 1.0) * (hi - lo)
    np.testing.assert_allclose(ik.rotation("L", q1), ik.rotation("L", q0), atol=0.03)


def test_wrapper_composes_through_the_map_and_shows_the_mapped_base(pinch_map: PinchResidualMap) -> None:
    env = ResidualActionWrapper(
        VLAObservationWrapper(GarmentFoldEnv(pcd_points=0), base="scripted"),
        residual_scale=PINCH_RESIDUAL_SCALE,
        residual_map="sb3_vla.envs.garment_fold:PinchResidualMap",
    )
    assert env.action_space.shape == (7,)
    assert env.observation_space[MAPPED_ACTION_KEY].shape == (7,)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[MAPPED_ACTION_KEY], pinch_map.observe(obs["vla_action"][None])[0], atol=1e-6)
    residual = np.array([1.0, -0.5, 0.0, 0.0, 0.0, 2.0, 0.0], dtype=np.float32)  # 2.0 is clipped to 1
    _, _, _, _, info = env.step(residual)
    scale = np.asarray(PINCH_RESIDUAL_SCALE)
    expected = pinch_map(info["base_action"][None].astype(np.float64), (np.clip(residual, -1, 1) * scale)[None])
    np.testing.assert_allclose(info["executed_action"], np.clip(expected[0], env.env.action_space.low, 1.0), atol=1e-6)
    moved = pinch_map.observe(info["executed_action"][None])[0] - pinch_map.observe(info["base_action"][None])[0]
    np.testing.assert_allclose(moved[:6], [0.05, -0.025, 0.0, 0.0, 0.0, 0.01], atol=3e-3)  # z: +-1 cm


def test_vec_wrapper_with_map_hides_base_and_keeps_terminal_obs_consistent() -> None:
    venv = make_residual_vec_env(
        "GarmentFold-v0",
        base="scripted",
        n_envs=2,
        residual_scale=PINCH_RESIDUAL_SCALE,
        residual_map=PinchResidualMap(),
        env_kwargs=dict(pcd_points=0, max_episode_steps=3),
        keep_base_in_obs=False,
        seed=0,
    )
    keys = set(venv.observation_space.spaces)
    assert MAPPED_ACTION_KEY in keys and "vla_action" not in keys and venv.action_space.shape == (7,)
    venv.reset()
    for _ in range(3):
        obs, _, dones, infos = venv.step(np.zeros((2, 7), np.float32))
    assert dones.all() and set(infos[0]["terminal_observation"]) == keys and set(obs) == keys
    venv.close()


def test_task_points_name_the_stage_grasp_and_place_points() -> None:
    env = GarmentFoldEnv(pcd_points=0, task_points_obs=True)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs) and obs["task_points"].shape == (12,)
    pts = obs["task_points"].reshape(2, 2, 3)
    # stage 0 folds the left sleeve with the left hand; the idle right hand repeats its own pinch point
    np.testing.assert_allclose(pts[0, 0], env.keypoint_position("left_sleeve_tip"), atol=1e-6)
    np.testing.assert_allclose(pts[0, 1], env.keypoint_target(0, "left_sleeve_tip"), atol=1e-6)
    np.testing.assert_allclose(pts[1], [env.pinch_position("R")] * 2, atol=1e-6)
    assert "task_points" not in GarmentFoldEnv(pcd_points=0).observation_space.spaces  # opt-in
    # from a wrapper list (rl-zoo gives its evaluation env no env_kwargs), through the wrappers in between
    wrapped = TaskPointsObservationWrapper(gym.make("GarmentFold-v0", pcd_points=0))
    obs, _ = wrapped.reset(seed=1)
    assert wrapped.observation_space["task_points"].shape == (12,) and wrapped.observation_space.contains(obs)
    with pytest.raises(TypeError, match="for GarmentFold-v0"):
        TaskPointsObservationWrapper(gym.make("Pendulum-v1"))


def test_targets_view_reads_the_descend_correction_off_one_vector() -> None:
    """Descending onto (or closing at) its wrong grasp point, the folder's view offset is the oracle correction."""
    env = ResidualActionWrapper(
        VLAObservationWrapper(GarmentFoldEnv(pcd_points=0, task_points_obs=True), base="scripted"),
        residual_scale=PINCH_RESIDUAL_SCALE,
        residual_map={"sb3_vla.envs.garment_fold:PinchResidualMap": {"targets_key": "task_points"}},
    )
    assert env.observation_space[MAPPED_ACTION_KEY].shape == (19,)
    obs, _ = env.reset(seed=0)
    folder = env.unwrapped.folder
    for _ in range(30):
        if folder.phase in (DESCEND, CLOSE):
            break
        obs, *_ = env.step(np.zeros(7, np.float32))
    assert folder.phase in (DESCEND, CLOSE)
    view = obs[MAPPED_ACTION_KEY]
    grasp_offset = view[7:9] * 0.05  # left hand, to its grasp keypoint (x, y), in metres
    np.testing.assert_allclose(grasp_offset, -folder.grasp_offset["L"], atol=2e-3)
    assert np.all(np.abs(view[7:]) <= 1.0)
    plain = PinchResidualMap(targets_key="task_points")
    with pytest.raises(ValueError, match="task_points_obs=True"):
        plain.observe(obs["vla_action"][None], {"stage": obs["stage"][None]})
    with pytest.raises(ValueError, match="target_range"):
        PinchResidualMap(target_range=0.0)
    with pytest.raises(TypeError, match="kwargs must be a mapping"):
        ResidualActionWrapper(env.env, residual_map={"sb3_vla.envs.garment_fold:PinchResidualMap": 3})


def _relative_env(vec: bool = False, held_key: str | None = None):
    map_kwargs: dict[str, object] = {"targets_key": "task_points", "relative": True}
    if held_key is not None:
        map_kwargs["held_key"] = held_key
    kwargs = dict(
        decision_interval=4,
        residual_scale=PHASED_PINCH_RESIDUAL_SCALE if held_key else RELATIVE_PINCH_RESIDUAL_SCALE,
        residual_map={"sb3_vla.envs.garment_fold:PinchResidualMap": map_kwargs},
    )
    if vec:
        return make_residual_vec_env(
            "GarmentFold-v0", base="scripted", n_envs=1, env_kwargs=dict(pcd_points=0, task_points_obs=True), **kwargs
        )
    return ResidualActionWrapper(
        VLAObservationWrapper(GarmentFoldEnv(pcd_points=0, task_points_obs=True), base="scripted"), **kwargs
    )


def test_relative_residual_moves_the_pinch_by_fractions_of_the_observed_offset() -> None:
    """relative=True: a residual is a fraction of the offset to the stage's grasp keypoint (or place target), so
    fraction 1 while descending puts the hand on the true keypoint, whatever the folder's perception error."""
    env = _relative_env()
    assert env.action_space.shape == (11,) and env.observation_space[MAPPED_ACTION_KEY].shape == (19,)
    obs, _ = env.reset(seed=0)
    folder = env.unwrapped.folder
    for _ in range(30):
        if folder.phase in (DESCEND, CLOSE):
            break
        obs, *_ = env.step(np.zeros(11, np.float32))
    assert folder.phase in (DESCEND, CLOSE)
    m = env.core.residual_map
    base = obs["vla_action"][None].astype(np.float64)
    raw = {k: np.asarray(v)[None] for k, v in env._obs.items()}
    residual = np.zeros(11)
    residual[[0, 1]] = 1.0 / 1.5  # left hand: fraction 1 of its xy offset to the grasp keypoint
    out = m(base, residual[None] * np.asarray(RELATIVE_PINCH_RESIDUAL_SCALE), obs=raw)
    pinch, before = m.observe(out, raw)[0, :3], m.observe(base, raw)[0, :3]
    keypoint = raw["task_points"][0, :3]
    np.testing.assert_allclose(pinch[:2], keypoint[:2], atol=2e-3)  # on the keypoint in x, y ...
    np.testing.assert_allclose(pinch[2], before[2], atol=2e-3)  # ... at the base's height
    assert np.abs(keypoint[:2] - before[:2]).max() > 5e-3  # the base was off it
    np.testing.assert_allclose(m(base, np.zeros((1, 11)), obs=raw), base)  # zero: the base's action
    with pytest.raises(ValueError, match="composes from the observation"):
        compose_mapped(m, base, residual[None], 1.0, -np.ones(61), np.ones(61))
    with pytest.raises(ValueError, match="pass targets_key too"):
        PinchResidualMap(relative=True)


def test_relative_residual_in_the_vec_wrapper_matches_the_single_env_one() -> None:
    single, vec = _relative_env(), _relative_env(vec=True)
    vec.seed(3)
    single.reset(seed=3)
    vec.reset()
    residual = np.full(11, 0.3, np.float32)
    for _ in range(8):
        *_, info = single.step(residual)
        *_, infos = vec.step(residual[None])
        np.testing.assert_allclose(infos[0]["executed_action"], info["executed_action"], atol=1e-5)
    assert np.abs(info["executed_action"] - info["base_action"]).max() > 1e-3


def test_an_observation_rule_over_relative_residuals_folds_what_the_base_drops() -> None:
    """Seed 1001: the scripted folder alone fails stage 0 (its perception error); moving half-way toward the grasp
    keypoint until the hand holds the cloth, then half-way toward the place target, a rule of the observation alone
    (``held``), folds the shirt. benchmarks/garment_headroom.py measures the rule over 20 episodes."""
    results = []
    for rule in (False, True):
        env = _relative_env()
        obs, _ = env.reset(seed=1001)
        success = False
        for _ in range(60):
            residual = np.zeros(11, np.float32)
            if rule:
                residual = (relative_rule(obs["held"]) / RELATIVE_PINCH_RESIDUAL_SCALE).astype(np.float32)
            obs, _, terminated, truncated, info = env.step(residual)
            success |= bool(info["is_success"])
            if terminated or truncated:
                break
        results.append(success)
    assert results == [False, True]


def test_held_phased_residuals_make_the_observation_rule_one_constant() -> None:
    """held_key="held": each hand's fractions apply to its current task point (grasp keypoint until it holds the
    cloth, then place target), so the relative rule is the constant residual 0.5 / 1.5 on the xy dims. It executes
    the relative rule's joint targets until a hand first grasps (the map then switches points within the decision,
    the rule at the next one) and folds seed 1001, which the base alone drops, as the rule does."""
    phased, relative = _relative_env(held_key="held"), _relative_env()
    assert phased.action_space.shape == (7,) and phased.observation_space[MAPPED_ACTION_KEY].shape == (19,)
    constant = np.zeros(7, np.float32)
    constant[[0, 1, 3, 4]] = RELATIVE_RULE_FRACTION / 1.5
    obs, _ = relative.reset(seed=1001)
    phased.reset(seed=1001)
    success, held_seen = np.zeros(2, bool), np.zeros(2, bool)
    for _ in range(60):
        rule = (relative_rule(obs["held"]) / RELATIVE_PINCH_RESIDUAL_SCALE).astype(np.float32)
        obs, _, terminated, truncated, info = relative.step(rule)
        phased_obs, *_, phased_info = phased.step(constant)
        held_seen |= phased_obs["held"] > 0.5
        if not held_seen.any():
            np.testing.assert_allclose(phased_info["executed_action"], info["executed_action"], atol=1e-6)
        success |= [bool(phased_info["is_success"]), bool(info["is_success"])]
        if terminated or truncated:
            break
    assert success.all() and held_seen.all()  # both hands held the cloth (grasp and place points were used)
    with pytest.raises(ValueError, match="pass relative=True too"):
        PinchResidualMap(targets_key="task_points", held_key="held")
    m = PinchResidualMap(targets_key="task_points", relative=True, held_key="grasped")
    raw = {k: np.asarray(v)[None] for k, v in phased._obs.items()}
    with pytest.raises(ValueError, match="'grasped'.*observes it as 'held'"):
        m(raw["vla_action"], np.ones((1, 7)) * 0.01, obs=raw)


def test_kept_dims_leave_the_others_at_zero() -> None:
    """dims=(0, 1, 3, 4): a 4-D residual of the xy fractions, composed as the 7-D form with 0 on dz and advance."""
    env = _relative_env(held_key="held")
    env.reset(seed=1001)
    raw = {k: np.asarray(v)[None] for k, v in env._obs.items()}
    full = PinchResidualMap(targets_key="task_points", relative=True, held_key="held")
    xy = PinchResidualMap(targets_key="task_points", relative=True, held_key="held", dims=(0, 1, 3, 4))
    assert xy.dim == 4 and full.dim == 7
    delta = np.array([[0.4, -0.3, 0.7, 0.2]])
    padded = np.zeros((1, 7))
    padded[:, [0, 1, 3, 4]] = delta
    executed = xy(raw["vla_action"], delta, obs=raw)
    np.testing.assert_allclose(executed, full(raw["vla_action"], padded, obs=raw))
    assert not np.allclose(executed, raw["vla_action"])  # the kept dims moved the arms
    wrapped = ResidualActionWrapper(
        VLAObservationWrapper(GarmentFoldEnv(pcd_points=0, task_points_obs=True), base="scripted"),
        residual_scale=(1.5, 1.5, 1.5, 1.5),
        residual_map=xy,
    )
    assert wrapped.action_space.shape == (4,)
    with pytest.raises(ValueError, match=r"dims must be distinct residual dims in 0\.\.6"):
        PinchResidualMap(targets_key="task_points", relative=True, held_key="held", dims=(0, 7))
    with pytest.raises(ValueError, match="dims must be distinct"):
        PinchResidualMap(dims=(1, 1))


def test_bad_maps_fail_clearly() -> None:
    class SevenToThree(ResidualMap):
        dim, action_shape = 2, (3,)

        def __call__(self, base: np.ndarray, delta: np.ndarray) -> np.ndarray:
            return base

    env = VLAObservationWrapper(gym.make("Pendulum-v1"), base="zero")
    with pytest.raises(ValueError, match=r"actions of shape \(3,\).*shape \(1,\)"):
        ResidualActionWrapper(env, residual_map=SevenToThree())
    with pytest.raises(ValueError, match="cannot import"):
        ResidualActionWrapper(env, residual_map="sb3_vla.nowhere:Map")
    with pytest.raises(TypeError, match="ResidualMap"):
        ResidualActionWrapper(env, residual_map="numpy:ones")
    garment = VLAObservationWrapper(GarmentFoldEnv(pcd_points=0), base="scripted")
    with pytest.raises(ValueError, match="absolute_dims / override_dims"):
        ResidualActionWrapper(garment, residual_map=PinchResidualMap(), override_dims=[60])


def _oracle(env: GarmentFoldEnv) -> np.ndarray:
    """The pinch offsets that cancel the folder's perception error (the headroom benchmark's oracle)."""
    from sb3_vla.envs.garment_fold.oracle import oracle_offsets

    delta = np.zeros((1, 7))
    offsets = oracle_offsets(env)
    for i, side in enumerate(("L", "R")):
        if side in offsets:
            delta[0, 3 * i : 3 * i + 2] = offsets[side]
    return delta


@pytest.mark.parametrize("command_frame", [True, False])
def test_command_frame_lets_a_correction_through(command_frame: bool, pinch_map: PinchResidualMap) -> None:
    """Seed 1002: the folder's grasp point is 1.3 cm off and its place point 5 cm off. A residual that puts the hand
    on the true sleeve tip stalls the folder when it judges arrival by the measured hand (it waits to be within
    1.2 cm of its wrong point forever); in its command frame it grasps and carries."""
    env = GarmentFoldEnv(pcd_points=0, scripted_noise=0.03, scripted_command_frame=command_frame)
    env.reset(seed=1002)
    carried = False
    for _ in range(30):
        action = pinch_map(env.scripted_action().astype(np.float64)[None], _oracle(env))[0]
        env.step(action)
        carried |= env.folder.phase == CARRY and env.held_vertex("L") >= 0
    tip = env.keypoint_position("left_sleeve_tip")
    if command_frame:
        assert carried
    else:
        assert not carried
        assert env.folder.phase == DESCEND and env.held_vertex("L") < 0
        assert np.linalg.norm(env.pinch_position("L")[:2] - tip[:2]) < 0.01  # on target, and stuck


def test_command_frame_changes_nothing_without_a_correction() -> None:
    envs = [GarmentFoldEnv(pcd_points=0, scripted_command_frame=cf) for cf in (True, False)]
    for e in envs:
        e.reset(seed=7)
    for _ in range(40):
        actions = [e.scripted_action() for e in envs]
        np.testing.assert_allclose(actions[0], actions[1], atol=1e-5)
        for e, a in zip(envs, actions):
            e.step(a)


def test_map_space_is_a_box() -> None:
    assert isinstance(PinchResidualMap.observation_space, spaces.Box)


def test_sb3_base_replays_a_pinch_residual_policy(tmp_path) -> None:
    """A residual policy trained through the pinch map, replayed as a frozen ``sb3:`` base, executes exactly what the
    wrapper executed in training (and says what is missing without the map)."""
    from stable_baselines3 import SAC

    from sb3_vla import ResidualSACPolicy, make_base

    venv = make_residual_vec_env(
        "GarmentFold-v0",
        base="scripted",
        residual_scale=PINCH_RESIDUAL_SCALE,
        residual_map=PinchResidualMap(),
        env_kwargs=dict(pcd_points=0),
        drop_keys=["garment_pcd"],
        seed=5,
    )
    model = SAC(ResidualSACPolicy, venv, learning_starts=10, batch_size=8, policy_kwargs=dict(net_arch=[16]), seed=0)
    model.learn(30)
    model.policy.actor.mu.bias.data.uniform_(-0.5, 0.5)  # a visibly non-zero residual
    path = tmp_path / "pinch.zip"
    model.save(path)

    raw = GarmentFoldEnv(pcd_points=0)
    spec = f"sb3:{path}?inner_base=scripted&residual_map=sb3_vla.envs.garment_fold:PinchResidualMap"
    spec += f"&residual_scale={list(PINCH_RESIDUAL_SCALE)}"
    replay = make_base(spec, action_space=raw.action_space, observation_space=raw.observation_space)
    # the same settings saved as sb3_vla.train saves them (<run>/<env>.zip + <run>/<env>/config.yml) need no options
    cfg = ResidualConfig(
        base="scripted",
        residual_scale=PINCH_RESIDUAL_SCALE,
        residual_map="sb3_vla.envs.garment_fold:PinchResidualMap",
    )
    (tmp_path / "pinch").mkdir()
    (tmp_path / "pinch" / "config.yml").write_text(yaml.safe_dump({"vec_env_wrapper": cfg.to_zoo()}))
    from_run = make_sb3_base(str(path), action_space=raw.action_space, observation_space=raw.observation_space)
    wrapped = ResidualActionWrapper(
        VLAObservationWrapper(raw, base="scripted"), PINCH_RESIDUAL_SCALE, residual_map=PinchResidualMap()
    )
    obs, _ = wrapped.reset(seed=11)
    for _ in range(3):
        residual = model.predict({k: v[None] for k, v in obs.items() if k != "garment_pcd"}, deterministic=True)[0]
        batch = VLABatch(
            obs={k: v[None] for k, v in obs.items() if k not in ("vla_action", MAPPED_ACTION_KEY)},
            instructions=[raw.instruction],
            env_ids=[0],
            env_outputs=[raw.scripted_action()],
        )
        replayed, _ = replay.predict(batch)
        np.testing.assert_array_equal(from_run.predict(batch)[0], replayed)
        obs, _, _, _, info = wrapped.step(residual[0])
        np.testing.assert_allclose(replayed[0], info["executed_action"], atol=1e-5)
    (tmp_path / "pinch" / "config.yml").unlink()  # without the run's saved config, the map must be given
    with pytest.raises(ValueError, match="residual_map"):
        make_base(f"sb3:{path}?inner_base=scripted&residual_scale=0.05", action_space=raw.action_space)


def test_headroom_benchmark_one_episode(tmp_path) -> None:
    from benchmarks import garment_headroom

    results_md = tmp_path / "RESULTS.md"
    md = garment_headroom.main(
        ["--episodes", "1", "--seed", "1002", "--workers", "1", "--results-md", str(results_md), "--smallvla-clips"]
    )
    rows = [line for line in md.splitlines() if line.startswith("| ") and "/1 |" in line]
    assert len(rows) == 6
    outcome = {row.split(" | ")[0][2:]: row.split(" | ")[1] for row in rows}
    # seed 1002: the oracle correction stalls the folder judging by the measured hand, and goes through in the
    # command frame (the folder's place point is 5 cm off there)
    assert outcome["+ oracle pinch-point correction, folder judging by the measured hand"] == "0/1"
    assert outcome["+ oracle pinch-point correction (PinchResidualMap), command-frame folder"] == "1/1"
    assert outcome["scripted folder, no residual"] == "0/1"
    assert outcome["noise-free folder (ceiling)"] == "1/1"
    rule = [k for k in outcome if k.startswith("+ a rule of the observation over relative pinch residuals")]
    assert len(rule) == 1 and outcome[rule[0]] == "1/1"  # the rule folds it too, without the oracle's privilege
    assert "<!-- BEGIN garment_headroom -->" in results_md.read_text()


def test_headroom_benchmark_small_vla_oracle(tmp_path) -> None:
    """Seed 1001: SmallVLA alone fails the first fold; moving its pinch points onto the noise-free folder's succeeds,
    and so does the relative rule of the observation (a fifth of the way toward the stage's points)."""
    from benchmarks import garment_headroom

    results_md = tmp_path / "RESULTS.md"
    args = ["--episodes", "1", "--seed", "1001", "--workers", "1", "--results-md", str(results_md)]
    md = garment_headroom.main(
        [*args, "--skip-scripted", "--smallvla-clips", "0.05", "--smallvla-rule-fractions", "0.2"]
    )
    outcome = {row.split(" | ")[0][2:]: row.split(" | ")[1] for row in md.splitlines() if "/1 |" in row}
    assert outcome == {
        "SmallVLA base, no residual": "0/1",
        "SmallVLA + oracle pinch-point correction (+-5 cm x/y, +-1.25 cm z)": "1/1",
        "SmallVLA + the relative rule of the observation at fraction 0.2 (PinchResidualMap(relative=True))": "1/1",
    }
    assert "<!-- BEGIN garment_headroom_smallvla -->" in results_md.read_text()
