"""``sb3:`` backend: tiny SB3 zips as frozen bases, including residual on residual."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from _tiny_models import TinyDictEnv, train_tiny_sb3
from gymnasium import spaces
from stable_baselines3 import PPO, SAC

from sb3_vla.bases import CallableBase, VLABatch, ZeroBase, make_base
from sb3_vla.bases.backends.sb3_files import (
    ObsNormalizer,
    UntrustedFileError,
    read_zip_num_timesteps,
    save_vec_normalize,
)
from sb3_vla.bases.backends.sb3_policy import SB3PolicyBase, make_sb3_base
from sb3_vla.bases.backends.sb3_run import REPLAY_IGNORED, REPLAY_OPTIONS, REPLAY_PARTIAL, REPLAY_UNSUPPORTED
from sb3_vla.core.residual_math import compose_action

ACT_SPACE = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sb3")
    return {
        "sac": train_tiny_sb3(d / "sac", "sac"),
        "ppo": train_tiny_sb3(d / "ppo", "ppo"),
        "residual": train_tiny_sb3(d / "residual" / "res_sac", "sac", residual=True),
    }


def _batch(n: int, seed: int = 0) -> VLABatch:
    rng = np.random.default_rng(seed)
    obs = {
        "state": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),  # extra key: ignored by the policy
    }
    return VLABatch(obs=obs, env_ids=np.arange(n))


def _inner_fn(obs: dict[str, np.ndarray]) -> np.ndarray:
    return 1.5 * obs["state"][:, :2]  # leaves the env's [-1, 1] bounds: replay clips it like the wrapper


@pytest.mark.parametrize(("key", "algo"), [("sac", SAC), ("ppo", PPO)])
def test_plain_policy_matches_model_predict(zips: dict[str, Path], key: str, algo: type) -> None:
    base = make_base(f"sb3:{zips[key]}", observation_space=TinyDictEnv(rgb=True).observation_space, device="cpu")
    assert isinstance(base, SB3PolicyBase)
    assert base.action_space.shape == (2,) and base.embedding_dim == 0 and base.obs_keys == ("state",)
    batch = _batch(8)
    action, emb = base.predict(batch)
    ref, _ = algo.load(zips[key], device="cpu").predict({"state": batch.obs["state"]}, deterministic=True)
    np.testing.assert_allclose(action, ref, atol=1e-6)
    assert emb is None
    singles = np.concatenate(
        [base.predict(VLABatch(obs={"state": batch.obs["state"][i : i + 1]}))[0] for i in range(8)]
    )
    np.testing.assert_allclose(action, singles, atol=1e-6)
    # loading through the algorithm class gives the same policy
    via_algo = SB3PolicyBase(zips[key], algo=key, device="cpu")
    np.testing.assert_allclose(via_algo.predict(batch)[0], action, atol=1e-6)


def test_residual_on_residual_composes_like_the_wrapper(zips: dict[str, Path]) -> None:
    inner = CallableBase(_inner_fn, ACT_SPACE, batched=True, name="half_state")
    base = SB3PolicyBase(zips["residual"], inner_base=inner, residual_scale=0.3, action_space=ACT_SPACE, device="cpu")
    assert base.action_space is ACT_SPACE
    batch = _batch(6, seed=2)
    action, _ = base.predict(batch)
    inner_action = np.clip(_inner_fn(batch.obs), -1.0, 1.0)
    residual, _ = SAC.load(zips["residual"], device="cpu").predict(
        {"state": batch.obs["state"], "vla_action": inner_action}, deterministic=True
    )
    expected = compose_action(inner_action, residual, 0.3, ACT_SPACE.low, ACT_SPACE.high)
    np.testing.assert_allclose(action, expected, atol=1e-6)
    assert not np.allclose(action, inner_action)  # the trained residual is not zero


def test_residual_spec_with_inner_spec_and_vec_normalize(zips: dict[str, Path], tmp_path: Path) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    z = zips["residual"]
    spec = f"sb3:{z}?inner_base='zero'&residual_scale=[0.2, 0.4]&absolute_dims=[1]"
    base = make_base(spec, action_space=ACT_SPACE, vec_normalize=None, device="cpu")
    batch = _batch(4, seed=3)
    residual, _ = SAC.load(z, device="cpu").predict(
        {"state": batch.obs["state"], "vla_action": np.zeros((4, 2), np.float32)}, deterministic=True
    )
    expected = compose_action(np.zeros((4, 2)), residual, np.array([0.2, 0.4]), ACT_SPACE.low, ACT_SPACE.high, [1])
    np.testing.assert_allclose(base.predict(batch)[0], expected, atol=1e-6)

    # VecNormalize statistics next to the zip are found and applied to the policy's observations
    venv = VecNormalize(DummyVecEnv([lambda: TinyDictEnv(residual=True)]), norm_reward=False)
    venv.reset()
    for _ in range(30):
        venv.step(np.random.default_rng(0).uniform(-1, 1, (1, 2)).astype(np.float32))
    venv.save(str(z.parent / "vecnormalize.pkl"))
    save_vec_normalize(venv, z.parent / "vecnormalize.npz")
    try:
        obs = venv.normalize_obs({"state": batch.obs["state"], "vla_action": np.zeros((4, 2), np.float32)})
        res2, _ = SAC.load(z, device="cpu").predict(obs, deterministic=True)
        exp2 = compose_action(np.zeros((4, 2)), res2, np.array([0.2, 0.4]), ACT_SPACE.low, ACT_SPACE.high, [1])
        # the plain-array statistics are preferred; the pickle beside them loads only with the opt-in
        normed = make_base(spec, action_space=ACT_SPACE, device="cpu")
        assert isinstance(normed.vec_normalize, ObsNormalizer)
        np.testing.assert_allclose(normed.predict(batch)[0], exp2, atol=1e-6)
        (z.parent / "vecnormalize.npz").unlink()
        with pytest.raises(UntrustedFileError, match=r"vecnormalize.pkl.*pickle.*trust_remote_code=True"):
            make_base(spec, action_space=ACT_SPACE, device="cpu")
        trusted = make_base(f"{spec}&trust_remote_code=True", action_space=ACT_SPACE, device="cpu")
        np.testing.assert_allclose(trusted.predict(batch)[0], exp2, atol=1e-6)
    finally:
        for name in ("vecnormalize.pkl", "vecnormalize.npz"):
            (z.parent / name).unlink(missing_ok=True)


def test_stacked_residual_runs_in_the_wrappers(zips: dict[str, Path]) -> None:
    """Stage 2: the stage-1 residual policy (on a callable base) is the frozen base of a new residual env."""
    from sb3_vla import make_residual_vec_env

    inner = CallableBase(_inner_fn, ACT_SPACE, batched=True)
    stage1 = SB3PolicyBase(zips["residual"], inner_base=inner, residual_scale=0.3, action_space=ACT_SPACE)
    env = make_residual_vec_env(TinyDictEnv, base=stage1, n_envs=2, residual_scale=0.1, seed=0)
    obs = env.reset()
    np.testing.assert_allclose(obs["vla_action"], stage1.predict(VLABatch(obs={"state": obs["state"]}))[0], atol=1e-6)
    _, _, _, infos = env.step(np.zeros((2, 2), np.float32))
    assert "base_action" in infos[0]
    env.close()


def test_image_policy_gets_channel_first_images(tmp_path: Path) -> None:
    """SB3 trains image policies behind VecTransposeImage; the base transposes the env's HWC images to match."""
    z = train_tiny_sb3(tmp_path / "ppo_img", "ppo", steps=32, rgb_size=36)
    base = SB3PolicyBase(z, device="cpu")
    assert base.obs_keys == ("rgb", "state")
    rng = np.random.default_rng(4)
    obs = {
        "state": rng.uniform(-1, 1, (3, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (3, 36, 36, 3), np.uint8),
    }
    action, _ = base.predict(VLABatch(obs=obs))
    chw = {"state": obs["state"], "rgb": np.transpose(obs["rgb"], (0, 3, 1, 2))}
    ref, _ = PPO.load(z, device="cpu").predict(chw, deterministic=True)
    np.testing.assert_allclose(action, ref, atol=1e-6)


def test_errors(zips: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="trained as a residual policy"):
        make_base(f"sb3:{zips['residual']}", action_space=ACT_SPACE)
    with pytest.raises(ValueError, match="residual_scale"):
        SB3PolicyBase(zips["residual"], inner_base=CallableBase(_inner_fn, ACT_SPACE, batched=True))
    with pytest.raises(ValueError, match="does not exist"):
        make_base("sb3:/nope/model.zip")
    with pytest.raises(ValueError, match="does not provide"):
        make_base(f"sb3:{zips['sac']}", observation_space=spaces.Dict({"other": ACT_SPACE}))
    with pytest.raises(ValueError, match="unknown algo"):
        SB3PolicyBase(zips["sac"], algo="nope")


# ------------------------------------------------------------------- replay reads the run folder's saved config
def _run_folder(root: Path, zip_path: Path, residual: dict, obs: dict | None = None) -> Path:
    """A run folder as sb3_vla.train leaves it: ``<run>/Tiny.zip`` and ``<run>/Tiny/{config,args}.yml``."""
    (root / "Tiny").mkdir(parents=True, exist_ok=True)
    shutil.copy(zip_path, root / "Tiny.zip")
    config = {
        "learning_rate": 0.001,
        "vec_env_wrapper": [
            {"sb3_vla.wrappers.VecVLAObservationWrapper": {"base": "zero", **(obs or {})}},
            {"sb3_vla.wrappers.VecResidualActionWrapper": residual},
        ],
    }
    (root / "Tiny" / "config.yml").write_text(yaml.safe_dump(config))
    (root / "Tiny" / "args.yml").write_text(yaml.safe_dump({"algo": "sac"}))
    return root / "Tiny.zip"


def _expected(z: Path, batch: VLABatch, scale: Any, absolute_dims: Any = ()) -> np.ndarray:
    residual, _ = SAC.load(z, device="cpu").predict(
        {"state": batch.obs["state"], "vla_action": np.zeros((len(batch), 2), np.float32)}, deterministic=True
    )
    return compose_action(
        np.zeros((len(batch), 2)), residual, np.asarray(scale), ACT_SPACE.low, ACT_SPACE.high, absolute_dims
    )


def _replay(spec: str, **kwargs: Any) -> SB3PolicyBase:
    return make_sb3_base(
        spec, observation_space=None, action_space=ACT_SPACE, vec_normalize=None, device="cpu", **kwargs
    )


def test_replay_takes_the_residual_settings_from_the_run_folder(zips: dict[str, Path], tmp_path: Path) -> None:
    z = _run_folder(tmp_path / "run", zips["residual"], {"residual_scale": [0.2, 0.4], "absolute_dims": [1]})
    batch = _batch(5, seed=7)
    base = _replay(str(z))  # no options: inner base, scale and absolute dims come from <run>/Tiny/config.yml
    assert isinstance(base.inner, ZeroBase)
    np.testing.assert_allclose(base.predict(batch)[0], _expected(z, batch, [0.2, 0.4], [1]), atol=1e-6)
    # explicit options win, the others still come from the run
    np.testing.assert_allclose(_replay(f"{z}?residual_scale=0.3").predict(batch)[0], _expected(z, batch, 0.3, [1]))
    # another zip of the same run (best_model.zip) finds the run's one config
    shutil.copy(z, z.parent / "best_model.zip")
    np.testing.assert_allclose(_replay(str(z.parent / "best_model.zip")).predict(batch)[0], base.predict(batch)[0])
    # inner_base=None asks for a plain replay, which a residual policy cannot be: the clear error stays
    with pytest.raises(ValueError, match="trained as a residual policy.*run folder"):
        _replay(str(z), inner_base=None)
    # the same error without a run folder (nothing saved next to the zip)
    with pytest.raises(ValueError, match="trained as a residual policy"):
        _replay(str(zips["residual"]))


def test_replay_composes_override_dims_and_schedules_as_the_wrapper(zips: dict[str, Path], tmp_path: Path) -> None:
    residual = {"residual_scale": {"start": 0.05, "end": 0.1, "steps": 100}, "override_dims": [0]}
    z = _run_folder(tmp_path / "run", zips["residual"], residual)
    base = _replay(str(z))
    batch = _batch(4, seed=8)
    # the schedule's value where training stopped (the zip's num_timesteps), with full authority (the action
    # range, 2.0) on dim 0 as in training
    trained = read_zip_num_timesteps(z)
    assert trained is not None and 0 < trained < 100
    reached = 0.05 + 0.05 * trained / 100
    np.testing.assert_allclose(base.residual_scale, [2.0, reached])
    np.testing.assert_allclose(base.predict(batch)[0], _expected(z, batch, [2.0, reached]), atol=1e-6)
    # a schedule training ran past: its end value
    longer = _run_folder(
        tmp_path / "run2", zips["residual"], {"residual_scale": {"start": 0.05, "end": 0.1, "steps": 10}}
    )
    np.testing.assert_allclose(_replay(str(longer)).residual_scale, 0.1)
    # trained with decision_interval=2: SB3 counted decisions, the schedule env steps (twice as many)
    chunked = _run_folder(
        tmp_path / "run3",
        zips["residual"],
        {"residual_scale": {"start": 0.05, "end": 0.1, "steps": 100}, "decision_interval": 2},
    )
    with pytest.warns(UserWarning, match="decision_interval=2"):
        np.testing.assert_allclose(_replay(str(chunked)).residual_scale, 0.05 + 0.05 * min(1.0, 2 * trained / 100))
    typo_schedule = {"residual_scale": {"start": 0.05, "stop": 0.1, "steps": 9}}
    typo = _run_folder(tmp_path / "run4", zips["residual"], typo_schedule)
    with pytest.raises(ValueError, match="exactly the keys start, end, steps.*unknown: \\['stop'\\]"):
        _replay(str(typo))


def test_replay_refuses_an_untrusted_saved_base_and_warns_on_held_actions(
    zips: dict[str, Path], tmp_path: Path
) -> None:
    z = _run_folder(tmp_path / "a", zips["residual"], {"residual_scale": 0.1}, {"base": "hf:/m?trust_remote_code=True"})
    with pytest.raises(UntrustedFileError, match="trust_remote_code.*pass inner_base"):
        _replay(str(z))
    assert isinstance(_replay(str(z), inner_base="zero").inner, ZeroBase)  # given explicitly: the user's choice
    z2 = _run_folder(tmp_path / "b", zips["residual"], {"residual_scale": 0.1, "decision_interval": 3})
    with pytest.warns(UserWarning, match="decision_interval=3"):
        _replay(str(z2))


def test_inner_base_instance_instruction_and_deprecated_spec(zips: dict[str, Path]) -> None:
    seen: list[Any] = []

    def inner_fn(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros((len(obs["state"]), 2), np.float32)

    class Recording(CallableBase):
        def predict(self, batch: VLABatch) -> Any:
            seen.append(batch.instructions)
            return super().predict(batch)

    inner = Recording(inner_fn, ACT_SPACE, batched=True)
    base = SB3PolicyBase(
        zips["residual"], inner_base=inner, residual_scale=0.2, action_space=ACT_SPACE, instruction="fold", device="cpu"
    )
    base.predict(_batch(2))
    base.predict(VLABatch(obs=_batch(2).obs, instructions=["", "unfold"], env_ids=np.arange(2)))
    assert seen == [["fold", "fold"], ["fold", "unfold"]]
    with pytest.warns(DeprecationWarning, match=r"inner_base=<spec string>\) is deprecated"):
        old = SB3PolicyBase(zips["residual"], inner_base="zero", residual_scale=0.2, action_space=ACT_SPACE)
    assert isinstance(old.inner, ZeroBase)


def test_every_residual_setting_is_replayed_or_deliberately_not() -> None:
    """Adding a ResidualConfig field forces a decision here: replay it, ignore it, or warn that it cannot."""
    from sb3_vla.wrappers import ResidualConfig

    tables = [set(REPLAY_OPTIONS), set(REPLAY_IGNORED), set(REPLAY_UNSUPPORTED)]
    assert set.union(*tables) == set(ResidualConfig.keys()) and sum(map(len, tables)) == len(ResidualConfig.keys())
    replay_args = set(inspect.signature(SB3PolicyBase).parameters)
    assert set(REPLAY_OPTIONS.values()) <= replay_args
    assert set(REPLAY_PARTIAL) <= set(REPLAY_OPTIONS)


def test_a_train_run_replays_with_no_options(tmp_path: Path) -> None:
    """``python -m sb3_vla.train`` on a zero base, then ``sb3:<run>/<env>.zip`` alone replays its composition."""
    from sb3_vla.train import build_parser, train

    th.set_num_threads(1)
    conf = tmp_path / "sac.yml"
    conf.write_text(yaml.safe_dump({"Pendulum-v1": {"learning_starts": 50, "buffer_size": 500, "batch_size": 16}}))
    argv = ["--algo", "sac", "--env", "Pendulum-v1", "--base", "zero", "-n", "100", "--conf-file", str(conf)]
    argv += ["--log-folder", str(tmp_path / "logs"), "--no-progress", "--verbose", "0", "--eval-freq", "0"]
    argv += ["-params", "residual_scale:0.5", "policy_kwargs:dict(net_arch=[8])"]
    run = train(build_parser().parse_args(argv))
    space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    base = make_sb3_base(str(run / "Pendulum-v1.zip"), observation_space=None, action_space=space, device="cpu")
    obs = np.random.default_rng(0).uniform(-1, 1, (3, 3)).astype(np.float32)
    residual, _ = SAC.load(run / "Pendulum-v1.zip", device="cpu").predict(
        {"obs": obs, "vla_action": np.zeros((3, 1), np.float32)}, deterministic=True
    )
    expected = compose_action(np.zeros((3, 1)), residual, 0.5, space.low, space.high)
    np.testing.assert_allclose(base.predict(VLABatch(obs={"obs": obs}, env_ids=np.arange(3)))[0], expected, atol=1e-6)
