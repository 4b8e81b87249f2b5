"""Catalogue of bad inputs, part two: config strings, budgets, devices, wrappers, env kwargs, YAML files, disks,
checkpoints, untrusted files and run folders. Each raises (or warns) with a message naming the problem and the fix;
almost all fail before any env is built."""

from __future__ import annotations

import errno
import json
import zipfile
from pathlib import Path

import pytest
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3 import SAC

from sb3_vla.bases.backends.sb3_files import (
    ObsNormalizer,
    UntrustedFileError,
    read_policy_spec,
    read_zip_policy_data,
    read_zip_policy_weights,
    resolve_class,
)
from sb3_vla.bases.backends.sb3_policy import load_vec_normalize
from sb3_vla.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    DiskFullError,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from sb3_vla.config import load_hyperparams, parse_config_string, resolve
from sb3_vla.core.options import parse_key_values
from sb3_vla.run_checks import check_action_space, check_device, check_env_kwargs, warn_no_updates
from sb3_vla.train import build_parser, train

OBS = "sb3_vla.wrappers.VLAObservationWrapper"
RES = "sb3_vla.wrappers.ResidualActionWrapper"
TORCH_WRITE_ERROR = (
    "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
)


def _sac(hp, **kw):
    return resolve("sac", "Pendulum-v1", {"n_timesteps": 100, **hp}, **kw)


def _file(tp: Path, name: str, text: str | bytes) -> Path:
    p = tp / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _train_args(tp: Path, *extra: str):
    argv = ["--env", "Pendulum-v1", "--base", "zero", "-n", "64", "--log-folder", str(tp / "logs")]
    return build_parser().parse_args([*argv, "--eval-freq", "0", "--no-progress", *extra])


@pytest.fixture(scope="module")
def tiny_model() -> SAC:
    th.set_num_threads(1)
    model = SAC("MlpPolicy", "Pendulum-v1", buffer_size=100, learning_starts=5, batch_size=4, device="cpu")
    model.policy_kwargs = {"net_arch": [4]}
    model.learn(10)
    return model


def _disk_full_torch(tp: Path, model: SAC, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError(TORCH_WRITE_ERROR)

    monkeypatch.setattr("sb3_vla.checkpoint.th.save", fail)
    save_checkpoint(model, tp / "ckpts")


def _disk_full_numpy(tp: Path, model: SAC, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sb3_vla.checkpoint.np.savez", fail)
    save_checkpoint(model, tp / "ckpts")


def _truncated_buffer(tp: Path, model: SAC, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(model, tp / "ckpts")
    rb = path / "replay_buffer.npz"
    rb.write_bytes(rb.read_bytes()[:200])
    load_checkpoint(model, path)


def _all_corrupt(tp: Path, model: SAC, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(model, tp / "ckpts")
    (path / "params.pt").write_bytes(b"truncated")
    load_latest_checkpoint(model, tp / "ckpts", log=lambda _: None)


def _no_weights_zip(tp: Path) -> None:
    p = tp / "model.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("data", "{}")
    read_zip_policy_weights(p)


def _spec_file(tp: Path, policy_class: str) -> None:
    spec = {"format": "sb3_vla.policy/1", "policy_class": policy_class, "policy_kwargs": {}}
    spec |= {"observation_space": {"type": "Discrete", "n": 2}, "action_space": {"type": "Discrete", "n": 2}}
    read_policy_spec(_file(tp, "policy.json", json.dumps(spec)))


def _resume_folder(tp: Path, args_text: str, config_text: str | None) -> None:
    run = tp / "run"
    (run / "Pendulum-v1").mkdir(parents=True)
    (run / "Pendulum-v1" / "args.yml").write_text(args_text)
    if config_text is not None:
        (run / "Pendulum-v1" / "config.yml").write_text(config_text)
    train(build_parser().parse_args(["--resume", str(run)]))


_ARGS_YML = yaml.safe_dump({"env": "Pendulum-v1", "algo": "sac", "base": "zero"})
_NO_CUDA = not th.cuda.is_available()

# name: (fn(tmp_path), exception, regex the message must match)
CASES = {
    # config strings are data, never run
    "policy_kwargs that call code": (
        lambda tp: _sac({"policy_kwargs": "__import__('os').system('true')"}),
        ValueError,
        r"policy_kwargs: cannot read .*is not a literal, a dict\(\.\.\.\) call",
    ),
    "malformed policy_kwargs": (
        lambda tp: _sac({"policy_kwargs": "dict(net_arch=[64,"}),
        ValueError,
        r"policy_kwargs: cannot read 'dict\(net_arch=\[64,' \(SyntaxError",
    ),
    "policy_kwargs not a mapping": (
        lambda tp: _sac({"policy_kwargs": "[64, 64]"}),
        ValueError,
        r"policy_kwargs must be a mapping such as dict\(net_arch=\[64, 64\]\), got \[64, 64\]",
    ),
    "policy_kwargs naming a function": (
        lambda tp: parse_config_string("dict(activation_fn=th.load)", "policy_kwargs"),
        ValueError,
        r"th\.load is not a class or a number",
    ),
    "policy_kwargs with an unknown name": (
        lambda tp: parse_config_string("dict(activation_fn=os.system)", "policy_kwargs"),
        ValueError,
        r"unknown name 'os' \(only \['nn', 'np', 'th'\] are in scope\)",
    ),
    "policy_kwargs reaching a private attribute": (
        lambda tp: parse_config_string("nn.__dict__", "policy_kwargs"),
        ValueError,
        r"'nn\.__dict__' is not a dotted name",
    ),
    "config arithmetic too large": (
        lambda tp: parse_config_string("[0] * 10**9", "replay_buffer_kwargs"),
        ValueError,
        r"replay_buffer_kwargs: .*too large",
    ),
    "normalize string that calls code": (
        lambda tp: _sac({"normalize": "exec('x=1')"}),
        ValueError,
        r"normalize: cannot read \"exec\('x=1'\)\"",
    ),
    "env_kwargs string that calls code": (
        lambda tp: _sac({"env_kwargs": "dict(g=open('/etc/passwd'))"}),
        ValueError,
        r"env_kwargs: cannot read .*open\('/etc/passwd'\)",
    ),
    "env_kwargs not a mapping": (
        lambda tp: _sac({"env_kwargs": [1, 2]}),
        ValueError,
        r"env_kwargs must be a mapping, got \[1, 2\]",
    ),
    # budgets
    "-n 0": (
        lambda tp: train(_train_args(tp, "-n", "0")),
        ValueError,
        r"-n 0: the training budget must be a positive number of env steps",
    ),
    "-n negative": (lambda tp: _sac({}, n_timesteps=-100), ValueError, r"-n -100: the training budget must be"),
    "YAML n_timesteps zero": (
        lambda tp: resolve("sac", "Pendulum-v1", {"n_timesteps": 0}),
        ValueError,
        r"n_timesteps must be > 0, got 0",
    ),
    "YAML n_timesteps not a number": (
        lambda tp: _sac({"n_timesteps": "lots"}),
        ValueError,
        r"n_timesteps must be a number, got 'lots'",
    ),
    "n_envs zero": (lambda tp: _sac({"n_envs": 0}), ValueError, r"n_envs must be >= 1, got 0"),
    # value types name the key
    "-params integer given a fraction": (
        lambda tp: _sac(parse_key_values(["batch_size:32.5"])),
        ValueError,
        r"batch_size must be an integer, got 32\.5",
    ),
    "-params integer given a word": (
        lambda tp: _sac(parse_key_values(["learning_starts:soon"])),
        ValueError,
        r"learning_starts must be an integer, got 'soon' \(str\)",
    ),
    "-params float given a list": (
        lambda tp: _sac(parse_key_values(["gamma:[0.9]"])),
        ValueError,
        r"gamma must be a number, got \[0\.9\] \(list\)",
    ),
    "-params bool given a word": (
        lambda tp: _sac(parse_key_values(["optimize_memory_usage:maybe"])),
        ValueError,
        r"optimize_memory_usage must be true or false, got 'maybe'",
    ),
    "bad linear schedule": (
        lambda tp: _sac({"learning_rate": "lin_fast"}),
        ValueError,
        r"learning_rate: cannot read the linear schedule 'lin_fast'",
    ),
    # wrappers
    "misspelt wrapper class": (
        lambda tp: _sac({"env_wrapper": [{"sb3_vla.wrappers.VLAObservationWraper": {"base": "zero"}}, RES]}),
        ValueError,
        r"env_wrapper 'sb3_vla\.wrappers\.VLAObservationWraper' cannot be imported .*did you mean "
        r"'sb3_vla\.wrappers\.VLAObservationWrapper'\?",
    ),
    "misspelt observation-wrapper kwarg": (
        lambda tp: _sac({"env_wrapper": [{OBS: {"base": "zero", "query_intervall": 2}}, RES]}),
        ValueError,
        r"VLAObservationWrapper: unknown kwarg\(s\) 'query_intervall' \(did you mean 'query_interval'\?\)",
    ),
    "misspelt residual-wrapper kwarg": (
        lambda tp: _sac({"env_wrapper": [{OBS: {"base": "zero"}}, {RES: {"residual_scal": 0.1}}]}),
        ValueError,
        r"ResidualActionWrapper: unknown kwarg\(s\) 'residual_scal' \(did you mean 'residual_scale'\?\)",
    ),
    "misspelt per-env wrapper kwarg": (
        lambda tp: _sac({"env_wrapper": [{"gymnasium.wrappers.TimeLimit": {"max_episode_step": 50}}]}),
        ValueError,
        r"TimeLimit: unknown kwarg\(s\) 'max_episode_step' \(did you mean 'max_episode_steps'\?\)",
    ),
    "wrapper that does not exist": (
        lambda tp: _sac({"env_wrapper": ["my_pkg.wrappers.Nothing"]}),
        ValueError,
        r"env_wrapper 'my_pkg\.wrappers\.Nothing' cannot be imported",
    ),
    "malformed env_wrapper entry": (
        lambda tp: _sac({"env_wrapper": [{"a.B": {}, "c.D": {}}]}),
        ValueError,
        r"env_wrapper entries must be 'dotted\.Name' or",
    ),
    "per-env wrapper after the VLA wrapper": (
        lambda tp: _sac({"env_wrapper": [{OBS: {"base": "zero"}}, "gymnasium.wrappers.TimeLimit"]}),
        ValueError,
        r"comes after VLAObservationWrapper",
    ),
    "frame_stack": (lambda tp: _sac({"frame_stack": 4}), ValueError, r"frame_stack is not supported"),
    # YAML files
    "conf file without an entry for the env": (
        lambda tp: load_hyperparams(_file(tp, "c.yml", "Pendulm-v1: {gamma: 0.9}"), "Pendulum-v1", required=True),
        ValueError,
        r"has no entry for 'Pendulum-v1' \(did you mean 'Pendulm-v1'\?\); it has \['Pendulm-v1'\]",
    ),
    "conf file without an entry, through the CLI": (
        lambda tp: train(_train_args(tp, "--conf-file", str(_file(tp, "c.yml", "CartPole-v1: {}")))),
        ValueError,
        r"has no entry for 'Pendulum-v1'.*drop --conf-file",
    ),
    "empty conf file given explicitly": (
        lambda tp: load_hyperparams(_file(tp, "c.yml", ""), "Pendulum-v1", required=True),
        ValueError,
        r"must map env ids to hyperparameters, got NoneType",
    ),
    # envs, algorithms, devices
    "unknown env kwarg": (
        lambda tp: check_env_kwargs("GarmentFold-v0", {"image_sise": 64}),
        ValueError,
        r"GarmentFold-v0: unknown env kwarg\(s\) 'image_sise' \(did you mean 'image_size'\?\); GarmentFoldEnv takes",
    ),
    "unknown env kwarg, through the CLI": (
        lambda tp: train(_train_args(tp, "--env-kwargs", "gravity:9.8")),
        ValueError,
        r"Pendulum-v1: unknown env kwarg\(s\) 'gravity'; PendulumEnv takes \['g', 'render_mode'\]",
    ),
    "non-positive image_size": (
        lambda tp: check_env_kwargs("GarmentFold-v0", {"image_size": 0}),
        ValueError,
        r"env kwarg 'image_size' must be > 0, got 0",
    ),
    "discrete action space for SAC": (
        lambda tp: check_action_space("sac", spaces.Discrete(2), "CartPole-v1"),
        ValueError,
        r"SAC needs a continuous \(Box\) action space but CartPole-v1 has Discrete\(2\); use --algo ppo",
    ),
    "device that is not there": (
        lambda tp: train(_train_args(tp, "--device", "cuda" if _NO_CUDA else "cuda:99")),
        ValueError,
        r"CUDA is not available on this machine" if _NO_CUDA else r"this machine has \d+ CUDA device",
    ),
    "device that is not a device": (
        lambda tp: check_device("gpu0"),
        ValueError,
        r"--device 'gpu0' is not a torch device.*use auto, cpu, cuda or cuda:N",
    ),
    # untrusted files
    "pickled VecNormalize without opt-in": (
        lambda tp: load_vec_normalize(_file(tp, "vecnormalize.pkl", b"\x80\x05N.")),
        UntrustedFileError,
        r"vecnormalize\.pkl' are a pickle.*vecnormalize\.npz.*vec_normalize=None.*trust_remote_code=True",
    ),
    "policy spec naming a non-library module": (
        lambda tp: _spec_file(tp, "os.system"),
        UntrustedFileError,
        r"names 'os\.system', outside the modules loaded without opt-in .*trust_remote_code=True",
    ),
    "policy spec naming a non-policy class": (
        lambda tp: resolve_class("stable_baselines3.common.logger.HumanOutputFormat", "policy.json"),
        UntrustedFileError,
        r"HumanOutputFormat', which is not a policy, torch module or optimiser class",
    ),
    "malformed policy spec": (
        lambda tp: read_policy_spec(_file(tp, "policy.json", "{}")),
        ValueError,
        r"policy spec '.*policy\.json' is malformed \(ValueError: format None",
    ),
    "not an SB3 zip": (
        lambda tp: read_zip_policy_data(_file(tp, "model.zip", b"PK not really")),
        ValueError,
        r"model\.zip' is not a Stable-Baselines3 model zip \(BadZipFile",
    ),
    "SB3 zip without weights": (lambda tp: _no_weights_zip(tp), ValueError, r"has no policy weights \(policy\.pth\)"),
    "corrupted vecnormalize.npz": (
        lambda tp: ObsNormalizer.load(_file(tp, "vecnormalize.npz", b"PK\x03\x04broken")),
        ValueError,
        r"VecNormalize statistics '.*vecnormalize\.npz' cannot be read",
    ),
    # run folders
    "resume with unreadable args.yml": (
        lambda tp: _resume_folder(tp, "env: [unclosed", None),
        ValueError,
        r"--resume: cannot read the run's arguments '.*args\.yml'",
    ),
    "resume without config.yml": (
        lambda tp: _resume_folder(tp, _ARGS_YML, None),
        ValueError,
        r"--resume: cannot read the run's config '.*config\.yml'",
    ),
    "resume with a config that is not a mapping": (
        lambda tp: _resume_folder(tp, _ARGS_YML, "[1, 2]"),
        ValueError,
        r"config\.yml' is not a mapping of hyperparameters",
    ),
    "resume without checkpoints": (
        lambda tp: load_latest_checkpoint(None, tp / "nothing"),  # type: ignore[arg-type]
        CheckpointError,
        r"no checkpoint under '.*nothing'",
    ),
}

# cases that need a (tiny, module-scoped) model: full disks and broken checkpoints
MODEL_CASES = {
    "disk full in torch.save": (
        _disk_full_torch,
        DiskFullError,
        r"writing the checkpoint at step 10 to '.*ckpts' failed \([0-9.]+ MiB free; torch: \[enforce fail.*"
        r"the disk is probably full",
    ),
    "disk full in np.savez": (
        _disk_full_numpy,
        DiskFullError,
        r"no space left on device while saving the checkpoint at step 10 to '.*ckpts' \([0-9.]+ MiB free\)",
    ),
    "truncated replay_buffer.npz": (
        _truncated_buffer,
        CorruptCheckpointError,
        r"'.*step_000000000010/replay_buffer\.npz' is truncated or corrupted",
    ),
    "every checkpoint corrupt": (
        _all_corrupt,
        CheckpointError,
        r"no readable checkpoint under '.*ckpts': checkpoint .* is corrupted \(params\.pt",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, tmp_path: Path) -> None:
    fn, exc, pattern = CASES[name]
    with pytest.raises(exc, match=pattern):
        fn(tmp_path)


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_bad_save_or_checkpoint(name: str, tmp_path: Path, tiny_model: SAC, monkeypatch) -> None:
    fn, exc, pattern = MODEL_CASES[name]
    with pytest.raises(exc, match=pattern):
        fn(tmp_path, tiny_model, monkeypatch)


def test_catalogue_size() -> None:
    assert len(CASES) + len(MODEL_CASES) + 2 >= 40  # + the two below


def test_budget_at_learning_starts_warns_with_the_numbers() -> None:
    with pytest.warns(UserWarning, match=r"n_timesteps 300 <= learning_starts 500: no gradient update will run"):
        warn_no_updates(SAC, {"learning_starts": 500}, 300)
    assert warn_no_updates(SAC, {}, 101) is None  # SAC's default learning_starts is 100


def test_nan_hint_names_the_cli_option(tmp_path: Path) -> None:
    argv = ["--env", "Pendulum-v1", "--base", "tests._helpers:nan_base_factory", "-n", "80", "--save-freq", "0"]
    argv += ["--log-folder", str(tmp_path), "--eval-freq", "0", "--no-progress", "--verbose", "0"]
    args = build_parser().parse_args([*argv, "-params", "learning_starts:10", "buffer_size:100"])
    from sb3_vla.wrappers import BaseModelError

    with pytest.raises(BaseModelError) as info:
        train(args)
    assert "-params nonfinite:zero" in str(info.value) and "nonfinite='zero'" not in str(info.value)


def test_numeric_strings_become_numbers() -> None:
    cfg = _sac(parse_key_values(["buffer_size:1e6", "tau:5e-3"]))
    assert cfg.model_kwargs["buffer_size"] == 1_000_000 and isinstance(cfg.model_kwargs["buffer_size"], int)
    assert cfg.model_kwargs["tau"] == pytest.approx(0.005)
