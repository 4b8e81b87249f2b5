"""make_residual_env: the single-env stack that check_env can check, with the spaces of make_residual_vec_env; and
ResidualConfig, the one declaration of the stack's settings."""

from __future__ import annotations

import dataclasses
import inspect
import json

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env

from sb3_vla import ZeroBase, make_residual_env, make_residual_vec_env
from sb3_vla.wrappers import (
    OBS_WRAPPER_KEYS,
    RESIDUAL_KEYS,
    IndexActionAdapter,
    ResidualActionWrapper,
    ResidualConfig,
    ResidualScaleSchedule,
    VecResidualActionWrapper,
    VecVLAObservationWrapper,
    VLAObservationWrapper,
)


def test_single_env_passes_check_env_with_the_vec_env_spaces() -> None:
    env = make_residual_env("Pendulum-v1", base="zero", residual_scale=2.0)
    sb3_check_env(env, warn=True)
    gym_check_env(env, skip_render_check=True)
    venv = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=2, residual_scale=2.0)
    assert env.observation_space == venv.observation_space
    assert env.action_space == venv.action_space
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["vla_action"], np.zeros(1, np.float32))  # the zero base
    venv.close()


def test_garment_fold_pinch_residual_passes_check_env() -> None:
    from sb3_vla.envs.garment_fold import PinchResidualMap

    scale = [0.02, 0.02, 0.005, 0.02, 0.02, 0.005, 0.3]
    env = make_residual_env(
        "GarmentFold-v0", base="scripted", residual_scale=scale, residual_map=PinchResidualMap(), decision_interval=4
    )
    sb3_check_env(env, warn=True)
    assert env.action_space.shape == (7,)
    _, _, _, _, info = env.step(np.zeros(7, np.float32))
    assert info["residual_applied"] in (True, False, 0, 1)


# ---------------------------------------------------------------------------- one declaration of the settings
_SIDES = {
    "obs": (VLAObservationWrapper, VecVLAObservationWrapper),
    "res": (ResidualActionWrapper, VecResidualActionWrapper),
}


def _wrapper_params(cls: type) -> list[inspect.Parameter]:
    return [p for n, p in inspect.signature(cls).parameters.items() if n not in ("self", "env", "venv")]


@pytest.mark.parametrize("side", sorted(_SIDES))
def test_every_wrapper_argument_is_a_config_field_with_its_default(side: str) -> None:
    """The single source: each wrapper's keyword arguments are exactly one side of ResidualConfig's fields, in
    order and with the same defaults, so a new argument cannot be left out of make_residual_vec_env / YAML / tuning."""
    keys = ResidualConfig.obs_wrapper_keys() if side == "obs" else ResidualConfig.residual_keys()
    assert keys == (OBS_WRAPPER_KEYS if side == "obs" else RESIDUAL_KEYS)
    fields = {f.name: f for f in dataclasses.fields(ResidualConfig)}
    for cls in _SIDES[side]:
        params = _wrapper_params(cls)
        assert tuple(p.name for p in params) == keys, cls.__name__
        for p in params:
            default = fields[p.name].default
            if default is dataclasses.MISSING:
                assert p.default is inspect.Parameter.empty, (cls.__name__, p.name)
            else:
                assert p.default == default and type(p.default) is type(default), (cls.__name__, p.name)
        assert f":param {params[-1].name}:" in (cls.__doc__ or "") or "same arguments" in (cls.__doc__ or "")
    # every field is documented once, on the config, and belongs to exactly one side
    assert set(ResidualConfig.obs_wrapper_keys()) | set(ResidualConfig.residual_keys()) == set(ResidualConfig.keys())
    assert not set(ResidualConfig.obs_wrapper_keys()) & set(ResidualConfig.residual_keys())
    for name in keys:
        assert f":param {name}:" in (ResidualConfig.__doc__ or ""), name


def test_every_field_reaches_its_wrapper() -> None:
    """A config with every setting away from its default builds wrappers that received each of them."""
    cfg = ResidualConfig(
        base="zero",
        query_interval=3,
        action_adapter=IndexActionAdapter(1, [0]),
        drop_keys=("obs",),
        add_action=True,
        nonfinite="zero",
        instruction="swing up",
        base_kwargs={"embedding_dim": 2},
        residual_scale=0.5,
        absolute_dims=(),
        base_key="vla_action",
        keep_base_in_obs=False,
        override_dims=(0,),
        residual_map=None,
        decision_interval=2,
        residual_penalty=0.1,
    )
    env = cfg.wrap_env(gym.make("Pendulum-v1"))
    obs_wrapper = env.env
    assert isinstance(env, ResidualActionWrapper) and isinstance(obs_wrapper, VLAObservationWrapper)
    recorded = {**obs_wrapper._saved_kwargs, **env._saved_kwargs}  # gymnasium's RecordConstructorArgs
    assert set(recorded) == set(ResidualConfig.keys())
    for name, got in recorded.items():
        value = getattr(cfg, name)
        if name == "action_adapter":  # recorded as a deep copy
            assert isinstance(got, IndexActionAdapter) and got.env_indices.tolist() == [0]
        else:
            assert got == (list(value) if isinstance(value, tuple) else value), name
    # and they act: the embedding from base_kwargs, obs key dropped, base hidden, 2 env steps per decision
    assert sorted(env.observation_space.spaces) == ["vla_embedding"]
    assert obs_wrapper.engine.query_interval == 3 and obs_wrapper.engine.nonfinite == "zero"
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(1, np.float32))
    assert obs_wrapper.engine.episode_steps[0] == 2 and obs_wrapper.instruction == "swing up"
    venv = cfg.wrap(make_vec_env("Pendulum-v1", n_envs=2))
    assert venv.observation_space == env.observation_space and venv.decision_interval == 2
    np.testing.assert_allclose(venv.residual_scale, [4.0])  # override_dims: the full action range
    venv.close()


def test_config_round_trips_through_yaml_and_json() -> None:
    cfg = ResidualConfig(
        base="scripted",
        base_kwargs={"device": "cpu"},
        drop_keys=["rgb"],
        residual_scale={"start": 0.05, "end": 0.3, "steps": 1000},
        absolute_dims=[1],
        residual_map="sb3_vla.envs.garment_fold:PinchResidualMap",
        decision_interval=4,
    )
    data = cfg.to_dict()
    assert data == {
        "base": "scripted",
        "drop_keys": ["rgb"],
        "base_kwargs": {"device": "cpu"},
        "residual_scale": {"start": 0.05, "end": 0.3, "steps": 1000},
        "absolute_dims": [1],
        "residual_map": "sb3_vla.envs.garment_fold:PinchResidualMap",
        "decision_interval": 4,
    }
    assert ResidualConfig.from_dict(yaml.safe_load(yaml.safe_dump(data))) == cfg
    assert ResidualConfig.from_dict(json.loads(json.dumps(data))) == cfg
    per_dim = ResidualConfig(base="zero", residual_scale=np.array([0.1, 0.2]))
    assert per_dim.residual_scale == (0.1, 0.2) and per_dim.to_dict()["residual_scale"] == [0.1, 0.2]
    schedule = ResidualConfig(base="zero", residual_scale=ResidualScaleSchedule(0.1, 0.2, 50)).to_dict()
    assert schedule["residual_scale"] == {"start": 0.1, "end": 0.2, "steps": 50}
    with pytest.raises(TypeError, match=r"'base' is a ZeroBase.*spec string"):
        ResidualConfig(base=ZeroBase(gym.make("Pendulum-v1").action_space)).to_dict()
    with pytest.raises(TypeError, match=r"'action_adapter' is a IndexActionAdapter"):
        ResidualConfig(base="zero", action_adapter=IndexActionAdapter(1, [0])).to_dict()


def test_unknown_settings_name_the_closest_match() -> None:
    with pytest.raises(ValueError, match=r"'residual_scal' \(did you mean 'residual_scale'\?\); valid settings: \["):
        ResidualConfig.from_dict({"base": "zero", "residual_scal": 0.2})
    with pytest.raises(ValueError, match="need a base"):
        ResidualConfig.from_dict({"residual_scale": 0.2})
    with pytest.raises(TypeError, match=r"'query_intervall' \(did you mean 'query_interval'\?\)"):
        make_residual_vec_env("Pendulum-v1", base="zero", query_intervall=2)
    with pytest.raises(TypeError, match="a base is needed"):
        make_residual_vec_env("Pendulum-v1", residual_scale=0.2)
    with pytest.raises(TypeError, match="did you mean 'decision_interval'"):
        ResidualConfig(base="zero").replace(decision_intervals=2)


def test_make_residual_vec_env_takes_a_config_or_kwargs_alike() -> None:
    cfg = ResidualConfig(base="zero", residual_scale=0.5, decision_interval=2)
    envs = [
        make_residual_vec_env("Pendulum-v1", base="zero", n_envs=2, seed=0, residual_scale=0.5, decision_interval=2),
        make_residual_vec_env("Pendulum-v1", n_envs=2, seed=0, config=cfg),
        make_residual_vec_env(
            "Pendulum-v1", n_envs=2, seed=0, config=cfg.replace(residual_scale=0.1), residual_scale=0.5
        ),
    ]
    outs = []
    for venv in envs:
        venv.reset()
        obs, rewards, _, infos = venv.step(np.full((2, 1), 0.4, np.float32))
        outs.append((obs["obs"], rewards, infos[0]["executed_action"]))
        venv.close()
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(outs[0][2], [0.2])  # zero base + 0.5 * 0.4
    single = make_residual_env("Pendulum-v1", config=cfg)
    assert single.observation_space == envs[0].observation_space and single.decision_interval == 2


def test_residual_scale_factor_and_zoo_entries() -> None:
    assert ResidualConfig(base="zero", residual_scale=0.2).scale_residual(1.5).residual_scale == pytest.approx(0.3)
    ramp = ResidualConfig(base="zero", residual_scale={"start": 0.1, "end": [0.2, 0.4], "steps": 9}).scale_residual(2)
    assert ramp.residual_scale == {"start": 0.2, "end": [0.4, 0.8], "steps": 9}
    with pytest.raises(ValueError, match="> 0"):
        ResidualConfig(base="zero").scale_residual(0.0)
    old = {
        "env_wrapper": [
            "sb3_vla.envs.garment_fold:CameraObservationWrapper",
            {"sb3_vla.wrappers.VLAObservationWrapper": {"base": "scripted", "query_interval": 4}},
            {"sb3_vla.wrappers.ResidualActionWrapper": {"residual_scale": 0.2}},
        ]
    }
    new = {
        "vec_env_wrapper": [
            {"sb3_vla.wrappers.VecVLAObservationWrapper": {"base": "scripted", "query_interval": 4}},
            {"sb3_vla.wrappers.residual.VecResidualActionWrapper": {"residual_scale": 0.2}},
        ]
    }
    expected = ResidualConfig(base="scripted", query_interval=4, residual_scale=0.2)
    assert ResidualConfig.from_zoo(old) == ResidualConfig.from_zoo(new) == expected
    assert ResidualConfig.from_zoo({"vec_env_wrapper": expected.to_zoo()}) == expected
    assert ResidualConfig.from_zoo({"learning_rate": 0.001}) is None
