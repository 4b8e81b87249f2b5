"""Catalogue of bad inputs: each raises a specific error whose message names the problem."""

import json
import sys

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env

from sb3_vla import (
    CallableBase,
    ResidualActionWrapper,
    VecVLAObservationWrapper,
    VLAFeaturesExtractor,
    VLAObservationWrapper,
    ZeroBase,
    make_base,
    make_residual_vec_env,
)
from sb3_vla.bases import BaseModel
from sb3_vla.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sb3_vla.config import load_hyperparams, resolve
from sb3_vla.core.options import parse_key_values
from sb3_vla.experiment import check_env_id
from sb3_vla.train import build_parser, train
from sb3_vla.wrappers import BaseModelError
from tests._helpers import NaNBase, ToyDictEnv


class NeedsImageBase(BaseModel):
    obs_keys = ("wrist_rgb",)

    def __init__(self):
        self.action_space = spaces.Box(-1, 1, (3,), np.float32)

    def predict(self, batch):
        return np.zeros((len(batch), 3), np.float32), None


class RaisingBase(ZeroBase):
    def predict(self, batch):
        raise RuntimeError("CUDA out of memory")


class WrongShapeBase(ZeroBase):
    def predict(self, batch):
        return np.zeros((len(batch), 5), np.float32), None


def _seven_d_base():
    return CallableBase(lambda o: np.zeros(7, np.float32), spaces.Box(-1, 1, (7,), np.float32), name="ee7d")


def _nan_step():
    venv = make_vec_env(lambda: ToyDictEnv(horizon=50), n_envs=2, seed=0)
    venv = VecVLAObservationWrapper(venv, NaNBase(spaces.Box(-1, 1, (3,), np.float32), bad_env=1, after=1))
    venv.reset()
    venv.step(np.zeros((2, 3), np.float32))


def _raising_step():
    env = VLAObservationWrapper(ToyDictEnv(), RaisingBase(spaces.Box(-1, 1, (3,), np.float32)))
    env.reset(seed=0)


def _wrong_shape_output():
    env = VLAObservationWrapper(ToyDictEnv(), WrongShapeBase(spaces.Box(-1, 1, (3,), np.float32)))
    env.reset(seed=0)


def _bad_residual_action():
    env = ResidualActionWrapper(VLAObservationWrapper(ToyDictEnv(), "zero"), 0.1)
    env.reset(seed=0)
    env.step(np.array([np.nan, 0, 0], np.float32))


class WrongImageEnv(ToyDictEnv):
    """Declares a 32x32 uint8 image but emits something else."""

    def __init__(self, shape=(16, 16, 3), dtype=np.uint8):
        super().__init__(image_size=32)
        self._shape, self._dtype = shape, dtype

    def _obs(self):
        obs = super()._obs()
        obs["rgb"] = np.zeros(self._shape, self._dtype)
        return obs


def _wrong_image(shape, dtype):
    env = VLAObservationWrapper(WrongImageEnv(shape, dtype), "zero")
    env.reset(seed=0)


def _missing_extra(monkeypatch_modules):
    import importlib
    import sys as _sys

    saved = {k: _sys.modules.get(k) for k in ("transformers",)}
    _sys.modules["transformers"] = None  # as if the [vla] extra were not installed
    try:
        importlib.invalidate_caches()
        make_base("hf:/nonexistent/model", action_space=spaces.Box(-1, 1, (7,)))
    finally:
        for k, v in saved.items():
            if v is None:
                _sys.modules.pop(k, None)
            else:
                _sys.modules[k] = v


def _yaml_file(tmp_path, text):
    p = tmp_path / "conf.yml"
    p.write_text(text)
    return p


def _train_args(tmp_path, *extra):
    return build_parser().parse_args(
        [
            "--env",
            "Pendulum-v1",
            "--base",
            "zero",
            "-n",
            "64",
            "--log-folder",
            str(tmp_path / "logs"),
            "--eval-freq",
            "0",
            "--no-progress",
            *extra,
        ]
    )


CASES = {
    "base action shape vs env without adapter": (
        lambda tp: VLAObservationWrapper(ToyDictEnv(action_dim=3), _seven_d_base()),
        ValueError,
        r"\(7,\).*\(3,\).*action_adapter",
    ),
    "adapter output of the wrong size": (
        lambda tp: VLAObservationWrapper(ToyDictEnv(), _seven_d_base(), action_adapter=lambda a: a[:, :2]),
        ValueError,
        r"maps base actions of shape \(7,\) to \(2,\)",
    ),
    "missing observation key the base needs": (
        lambda tp: VLAObservationWrapper(ToyDictEnv(), NeedsImageBase()),
        ValueError,
        r"wrist_rgb.*available keys",
    ),
    "observation key collision": (
        lambda tp: VLAObservationWrapper(VLAObservationWrapper(ToyDictEnv(), "zero"), "zero"),
        ValueError,
        r"already has a key 'vla_action'",
    ),
    "unknown drop key": (
        lambda tp: VLAObservationWrapper(ToyDictEnv(), "zero", drop_keys=["depth"]),
        ValueError,
        r"drop_keys \['depth'\]",
    ),
    "residual_scale zero": (
        lambda tp: ResidualActionWrapper(VLAObservationWrapper(ToyDictEnv(), "zero"), residual_scale=0.0),
        ValueError,
        r"residual_scale must be > 0",
    ),
    "residual_scale negative per dim": (
        lambda tp: ResidualActionWrapper(VLAObservationWrapper(ToyDictEnv(), "zero"), residual_scale=[0.1, -1, 0.1]),
        ValueError,
        r"residual_scale must be > 0",
    ),
    "residual_scale wrong length": (
        lambda tp: ResidualActionWrapper(VLAObservationWrapper(ToyDictEnv(), "zero"), residual_scale=[0.1, 0.1]),
        ValueError,
        r"list of 3 floats",
    ),
    "residual wrapper without base key": (
        lambda tp: ResidualActionWrapper(ToyDictEnv(), 0.1),
        ValueError,
        r"'vla_action'.*VLAObservationWrapper",
    ),
    "absolute dim out of range": (
        lambda tp: ResidualActionWrapper(VLAObservationWrapper(ToyDictEnv(), "zero"), 0.1, absolute_dims=[5]),
        ValueError,
        r"absolute_dims \[5\] out of range",
    ),
    "non-finite residual action": (lambda tp: _bad_residual_action(), ValueError, r"NaN/inf"),
    "non-finite base output": (lambda tp: _nan_step(), BaseModelError, r"NaN/inf for env index \[1\].*step"),
    "base raises": (
        lambda tp: _raising_step(),
        BaseModelError,
        r"RaisingBase raised RuntimeError at env indices \[0\].*CUDA out of memory",
    ),
    "base returns the wrong shape": (lambda tp: _wrong_shape_output(), BaseModelError, r"shape \(1, 5\)"),
    "query_interval zero": (
        lambda tp: VLAObservationWrapper(ToyDictEnv(), "zero", query_interval=0),
        ValueError,
        r"query_interval must be >= 1",
    ),
    "unknown nonfinite mode": (
        lambda tp: VLAObservationWrapper(ToyDictEnv(), "zero", nonfinite="ignore"),
        ValueError,
        r"nonfinite must be one of",
    ),
    "unknown base spec": (lambda tp: make_base("gpt5:foo"), ValueError, r"unknown base spec 'gpt5:foo'"),
    "base spec of a wrong type": (lambda tp: make_base(42), TypeError, r"CallableBase"),
    "unknown env id": (lambda tp: check_env_id("GarmentFlod-v0"), ValueError, r"GarmentFlod-v0"),
    "unknown env id in make_residual_vec_env": (
        lambda tp: make_residual_vec_env("NoSuchEnv-v9", base="zero"),
        ValueError,
        r"unknown env id 'NoSuchEnv-v9'",
    ),
    "unknown algorithm": (lambda tp: resolve("dqn2", "Pendulum-v1", {}), ValueError, r"unknown algorithm 'dqn2'"),
    "YAML with an unknown key": (
        lambda tp: resolve("sac", "Pendulum-v1", {"learning_rat": 0.001, "n_timesteps": 10}),
        ValueError,
        r"'learning_rat' \(did you mean 'learning_rate'\?\)",
    ),
    "YAML with a wrong type": (
        lambda tp: resolve("sac", "Pendulum-v1", {"batch_size": "big", "n_timesteps": 10}),
        ValueError,
        r"batch_size must be an integer",
    ),
    "YAML that does not parse": (
        lambda tp: load_hyperparams(_yaml_file(tp, "Pendulum-v1: {n_timesteps: [1,"), "Pendulum-v1"),
        ValueError,
        r"not valid YAML",
    ),
    "YAML entry not a mapping": (
        lambda tp: load_hyperparams(_yaml_file(tp, "Pendulum-v1: 12"), "Pendulum-v1"),
        ValueError,
        r"must be a mapping",
    ),
    "missing conf file": (
        lambda tp: load_hyperparams(tp / "nope.yml", "Pendulum-v1"),
        ValueError,
        r"nope.yml.*does not exist",
    ),
    "bad -params item": (lambda tp: parse_key_values(["learning_rate=0.1"]), ValueError, r"expected key:value"),
    "residual wrapper without a base in YAML": (
        lambda tp: resolve(
            "sac", "X-v0", {"n_timesteps": 1, "env_wrapper": ["sb3_vla.wrappers.ResidualActionWrapper"]}
        ),
        ValueError,
        r"needs a base",
    ),
    "extractor on a Box space": (
        lambda tp: VLAFeaturesExtractor(spaces.Box(-1, 1, (3,))),
        TypeError,
        r"needs a Dict observation space",
    ),
    "extractor excluding an unknown key": (
        lambda tp: VLAFeaturesExtractor(ToyDictEnv().observation_space, exclude_keys=["vla_embeding"]),
        ValueError,
        r"exclude_keys \['vla_embeding'\]",
    ),
    "image of the wrong size": (
        lambda tp: _wrong_image((16, 16, 3), np.uint8),
        ValueError,
        r"'rgb' has shape \(16, 16, 3\).*declares \(32, 32, 3\)",
    ),
    "image of the wrong dtype": (
        lambda tp: _wrong_image((32, 32, 3), np.float32),
        ValueError,
        r"'rgb' has dtype float32.*uint8",
    ),
    "point cloud of the wrong shape": (
        lambda tp: VLAFeaturesExtractor(spaces.Dict({"pcd": spaces.Box(-1, 1, (64,))}), pointcloud_keys=["pcd"]),
        ValueError,
        r"point cloud key 'pcd' must have shape \(N, C\), got \(64,\)",
    ),
    "missing optional extra": (lambda tp: _missing_extra(None), ImportError, r"pip install -e \"\.\[vla\]\""),
    "Optuna storage that cannot be reached": (
        lambda tp: __import__("sb3_vla.tuning", fromlist=["make_storage"]).make_storage(
            "postgresql+psycopg2://u:pw@127.0.0.1:9/nodb"
        ),
        ValueError,
        r"cannot reach the Optuna storage .*127\.0\.0\.1:9",
    ),
    "unwritable log folder": (
        lambda tp: train(_train_args(tp, "--log-folder", "/proc/sb3_vla_logs")),
        ValueError,
        r"not writable.*--log-folder",
    ),
    "replay buffer larger than memory": (
        lambda tp: _huge_replay_buffer(),
        ValueError,
        r"replay buffer would need [0-9.]+ GiB \(buffer_size 1000000 x 1574\.5 KB per transition\) .*"
        r"-params buffer_size:",
    ),
    "resume from a folder that is not a run": (
        lambda tp: train(_train_args(tp, "--resume", str(tp))),
        ValueError,
        r"not a run folder",
    ),
}


def _huge_replay_buffer() -> None:
    # 512x512 RGB obs at SB3's default buffer_size: ~1.5 TB (obs and next_obs); fails before any allocation
    from sb3_vla.experiment import build_model

    env = make_vec_env(lambda: ToyDictEnv(image_size=512), n_envs=1)
    cfg = resolve("sac", "Toy-v0", {"n_timesteps": 10})
    build_model(cfg, env, seed=0, device="cpu", tensorboard_log=None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path):
    fn, exc, pattern = CASES[name]
    with pytest.raises(exc, match=pattern):
        fn(tmp_path)


def _tiny_sac(env_factory=None):
    env = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=1, residual_scale=1.0, seed=0)
    return SAC(
        "MultiInputPolicy",
        env,
        buffer_size=200,
        learning_starts=10,
        batch_size=8,
        policy_kwargs=dict(net_arch=[8], features_extractor_class=VLAFeaturesExtractor),
    )


def test_checkpoint_missing_corrupted_and_mismatched(tmp_path):
    model = _tiny_sac()
    model.learn(30)
    path = save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*meta.json missing"):
        load_checkpoint(_tiny_sac(), tmp_path / "nowhere")
    (path / "params.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"corrupted \(params.pt"):
        load_checkpoint(_tiny_sac(), path)
    meta = json.loads((path / "meta.json").read_text())
    meta["action_space"] = "Box(-1.0, 1.0, (61,), float32)"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"action_space Box\(-1.0, 1.0, \(61,\), float32\) but this run has"):
        load_checkpoint(_tiny_sac(), path)
    (path / "meta.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"corrupted \(meta.json"):
        load_checkpoint(_tiny_sac(), path)


def test_cli_reports_errors_without_traceback(tmp_path, capsys, monkeypatch):
    from sb3_vla.train import main

    monkeypatch.setattr(sys, "argv", ["sb3_vla.train"])
    with pytest.raises(SystemExit) as exc:
        main(["--env", "NoSuchEnv-v0", "--log-folder", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown env id 'NoSuchEnv-v0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--algo", "dqn9", "--env", "Pendulum-v1"])
    assert "invalid choice: 'dqn9'" in capsys.readouterr().err


def test_yaml_config_file_round_trip(tmp_path):
    conf = _yaml_file(tmp_path, yaml.safe_dump({"Pendulum-v1": {"n_timesteps": 100, "learning_rate": "lin_0.001"}}))
    hp, source = load_hyperparams(conf, "Pendulum-v1")
    cfg = resolve("sac", "Pendulum-v1", hp, {"batch_size": 32}, base="zero")
    assert source.endswith(":Pendulum-v1") and cfg.n_timesteps == 100
    assert cfg.model_kwargs["learning_rate"](0.5) == pytest.approx(0.0005)
    assert cfg.model_kwargs["batch_size"] == 32 and cfg.obs_wrapper_kwargs == {"base": "zero"}
    assert gym.spaces  # keep the gymnasium import used
