"""Optuna tuning: the residual-aware sampler, rl-zoo's ExperimentManager with it (rl-zoo's own tables left alone),
pruning of NaN trials, the best trial as a zoo YAML, the old import paths, and a study shared by several worker
processes through PostgreSQL (``.ci/postgres.sh``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from torch import nn

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from sb3_vla import tuning  # noqa: E402
from sb3_vla.cli import tune_parser  # noqa: E402
from sb3_vla.extractor import VLAFeaturesExtractor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
BASE = "base:tests._zoo_helpers:biased_pendulum_base"
# 200 steps, 50 of them with gradient updates: enough to exercise a trial end to end
TINY = ["-n", "200", "--eval-episodes", "1", "--n-evaluations", "2", "--n-eval-envs", "1"]


def _sample(space: tuning.SearchSpace, n: int = 30, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(tuning.sample_residual_params(trial, space))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("algo", ["sac", "tqc", "td3", "ppo"])
def test_sampler_samples_residual_knobs_and_converter_keeps_the_extractor(algo: str) -> None:
    space = tuning.SearchSpace(algo, residual=True, has_embedding=True, has_pointclouds=True)
    yaml_pk = {"net_arch": [8], "features_extractor_kwargs": {"pointnet_dims": [16, 32], "exclude_keys": []}}
    seen_embedding, seen_action = set(), set()
    for params in _sample(space):
        # primitives only, as Optuna stores them
        assert all(isinstance(v, bool | int | float | str) for v in params.values())
        assert {"residual_scale_factor", "query_interval", "policy_sees_base_action", "policy_sees_embedding"} <= set(
            params
        )
        hp = tuning.convert_residual_params(params, algo, yaml_pk, residual_scale=0.2, n_envs=2)
        pk = hp["policy_kwargs"]
        assert pk["features_extractor_class"] is VLAFeaturesExtractor  # the rl-zoo pitfall: never dropped
        fe = pk["features_extractor_kwargs"]
        assert fe["pointnet_dims"] == [16, 32]  # YAML extractor kwargs kept
        assert fe["pointnet_output_dim"] == params["pointnet_output_dim"]
        assert np.isclose(hp["residual_scale"], 0.2 * params["residual_scale_factor"])
        assert hp["query_interval"] in (1, 2, 4)
        assert hp["keep_base_in_obs"] is params["policy_sees_base_action"]
        assert ("vla_embedding" in fe["exclude_keys"]) is (not params["policy_sees_embedding"])
        seen_embedding.add(params["policy_sees_embedding"])
        seen_action.add(params["policy_sees_base_action"])
        assert 0 < hp["gamma"] < 1 and hp["learning_rate"] > 0
        if algo == "ppo":
            assert hp["batch_size"] <= hp["n_steps"] * 2
            assert pk["activation_fn"] in (nn.Tanh, nn.ReLU)
        if algo == "tqc":
            assert pk["n_quantiles"] > hp["top_quantiles_to_drop_per_net"]
    assert seen_embedding == {True, False} and seen_action == {True, False}
    assert yaml_pk["features_extractor_kwargs"] == {"pointnet_dims": [16, 32], "exclude_keys": []}  # not mutated


def test_rl_zoo_tables_are_left_alone_and_the_manager_is_rl_zoos_class() -> None:
    import warnings

    from rl_zoo3 import hyperparams_opt
    from rl_zoo3.exp_manager import ExperimentManager

    import sb3_vla.tune
    from sb3_vla.tuning.zoo import ResidualExperimentManager

    with pytest.warns(DeprecationWarning, match="does nothing"):
        sb3_vla.tune.register_zoo_samplers()
    for algo in ("sac", "tqc", "td3", "ppo"):  # importing our modules (or the old call) patches nothing
        assert hyperparams_opt.HYPERPARAMS_SAMPLER[algo].__module__ == "rl_zoo3.hyperparams_opt"
        assert hyperparams_opt.HYPERPARAMS_CONVERTER[algo].__module__ == "rl_zoo3.hyperparams_opt"
    # rl-zoo extended through its own class: the residual search space is ResidualExperimentManager.objective
    assert issubclass(ResidualExperimentManager, ExperimentManager)
    assert ResidualExperimentManager.objective is not ExperimentManager.objective
    # rl-zoo's own sampler (used for envs without our wrappers) returns a fresh policy_kwargs without
    # features_extractor_class, the pitfall ours avoids
    trial = optuna.create_study().ask()
    hp = hyperparams_opt.HYPERPARAMS_SAMPLER["sac"](trial, 1, 1, {"using_her_replay_buffer": False})
    assert "features_extractor_class" not in hp["policy_kwargs"]
    assert "residual_scale_factor" not in trial.params
    # the old import paths keep working for one release, with a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from sb3_vla.tune import SearchSpace, make_storage, write_best_yaml

    assert SearchSpace is tuning.SearchSpace and make_storage is tuning.make_storage
    assert write_best_yaml is tuning.write_best_yaml
    assert sum(issubclass(w.category, DeprecationWarning) and "sb3_vla.tuning" in str(w.message) for w in caught) == 3


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    return proc


def test_two_trial_optimisation_writes_a_best_yaml_that_trains(tmp_path: Path) -> None:
    best = tmp_path / "best.yml"
    _run("-m", "sb3_vla.train", "--algo", "sac", "--env", "Pendulum-v1", "--optimize", "--n-trials", "2",
         "-f", str(tmp_path), *TINY[:2], "--eval-episodes", "1", "-params", BASE, "learning_starts:150")  # fmt: skip
    storage = tuning.default_storage(str(tmp_path), "sac", "Pendulum-v1")
    assert storage.endswith("Pendulum-v1_optuna.db") and (tmp_path / "sac" / "Pendulum-v1_optuna.db").is_file()
    study = optuna.load_study(study_name="sac-Pendulum-v1", storage=storage)
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)
    assert "residual_scale_factor" in study.trials[0].params
    assert "sb3_vla.train" in study.user_attrs["command"]
    written = tmp_path / "sac" / "Pendulum-v1_best.yml"
    best.write_text(written.read_text())
    entry = yaml.safe_load(best.read_text())["Pendulum-v1"]
    assert entry["policy"] == "sb3_vla.policies.ResidualSACPolicy"
    pk = eval(entry["policy_kwargs"], {"th": th, "nn": nn, "np": np})  # rl-zoo's scope
    assert "features_extractor_kwargs" in pk
    wrappers = entry["vec_env_wrapper"]
    assert wrappers[0]["sb3_vla.wrappers.VecVLAObservationWrapper"]["base"] == "tests._zoo_helpers:biased_pendulum_base"
    assert wrappers[1]["sb3_vla.wrappers.VecResidualActionWrapper"]["residual_scale"] > 0

    # loadable by sb3_vla.train as a conf file
    from sb3_vla.experiment import build_model, build_vec_env, resolve_from_args
    from sb3_vla.train import build_parser

    args = build_parser().parse_args(["--env", "Pendulum-v1", "--conf-file", str(best), "-n", "64", "--verbose", "0"])
    cfg = resolve_from_args(args)
    env = build_vec_env(cfg, cfg.n_envs, 0)
    model = build_model(cfg, env, 0, "cpu", None)
    assert isinstance(model.policy.actor.features_extractor, VLAFeaturesExtractor)  # type: ignore[union-attr]
    env.close()


def test_rl_zoo_optimize_uses_the_residual_sampler(tmp_path: Path) -> None:
    """rl-zoo's train command with ResidualExperimentManager (python -m sb3_vla.tuning.zoo): its study samples the
    residual knobs; --trial-id then trains one trial with its knobs in our wrappers' kwargs."""
    conf = tmp_path / "sac.yml"
    data = yaml.safe_load((ROOT / "zoo_configs" / "sac.yml").read_text())
    entry = data["Pendulum-v1"]
    entry["vec_env_wrapper"][0]["sb3_vla.wrappers.VecVLAObservationWrapper"]["base"] = (
        "tests._zoo_helpers:biased_pendulum_base"
    )
    entry["learning_starts"] = 150
    conf.write_text(yaml.safe_dump({"Pendulum-v1": entry}))
    storage = f"sqlite:///{tmp_path / 'zoo.db'}"
    _run("-m", "sb3_vla.tuning.zoo", "--algo", "sac", "--env", "Pendulum-v1", "--conf-file", str(conf),
         "--optimize", "--n-trials", "2", "-n", "200", "--n-evaluations", "1", "--eval-episodes", "1",
         "--storage", storage, "--study-name", "zoo", "-f", str(tmp_path / "logs"), "--no-optim-plots")  # fmt: skip
    study = optuna.load_study(study_name="zoo", storage=storage)
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t
        assert {"residual_scale_factor", "policy_sees_base_action", "policy_sees_embedding"} <= set(t.params)

    trial = study.trials[1]  # rl-zoo loads a trial only for a non-zero --trial-id
    log = tmp_path / "trained"
    _run("-m", "sb3_vla.tuning.zoo", "--algo", "sac", "--env", "Pendulum-v1", "--conf-file", str(conf),
         "--storage", storage, "--study-name", "zoo", "--trial-id", "1", "-n", "32", "--eval-freq", "-1",
         "-f", str(log))  # fmt: skip
    saved = yaml.unsafe_load((log / "sac" / "Pendulum-v1_1" / "Pendulum-v1" / "config.yml").read_text())
    wrappers = {name: kwargs for w in saved["vec_env_wrapper"] for name, kwargs in w.items()}
    residual = wrappers["sb3_vla.wrappers.VecResidualActionWrapper"]
    assert np.isclose(residual["residual_scale"], 2.0 * trial.params["residual_scale_factor"])
    assert residual["keep_base_in_obs"] is trial.params["policy_sees_base_action"]
    assert wrappers["sb3_vla.wrappers.VecVLAObservationWrapper"]["query_interval"] == trial.params["query_interval"]
    assert "residual_scale" not in saved  # routed into the wrapper, not passed to SAC


def _args(tmp_path: Path, conf: Path, *extra: str, env_id: str = "Pendulum-v1"):
    return tune_parser().parse_args(
        [
            "--algo",
            "sac",
            "--env",
            env_id,
            "--conf-file",
            str(conf),
            "-f",
            str(tmp_path),
            "--verbose",
            "0",
            "--n-trials",
            "1",
            "-n",
            "60",
            "--eval-episodes",
            "1",
            "--n-evaluations",
            "1",
            *extra,
        ]  # fmt: skip
    )


def _nan_conf(tmp_path: Path, callback: str | None = None, env_id: str = "Pendulum-v1") -> Path:
    entry = yaml.safe_load((ROOT / "zoo_configs" / "sac.yml").read_text())["Pendulum-v1"]
    entry["learning_starts"] = 1000
    if callback:
        entry["callback"] = callback
    path = tmp_path / f"nan_{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump({env_id: entry}))
    return path


def test_nan_return_trial_is_pruned(tmp_path: Path) -> None:
    from tests import _zoo_helpers  # noqa: F401 - registers NaNPendulum-v0

    conf = _nan_conf(tmp_path, env_id="NaNPendulum-v0")
    study = tuning.tune(_args(tmp_path, conf, env_id="NaNPendulum-v0"))
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert "non-finite" in trial.user_attrs["pruned_reason"]


def test_value_error_in_training_is_pruned(tmp_path: Path) -> None:
    study = tuning.tune(_args(tmp_path, _nan_conf(tmp_path, callback="tests._zoo_helpers.RaiseValueErrorCallback")))
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert "ValueError" in trial.user_attrs["pruned_reason"]
    assert not (tmp_path / "sac" / "Pendulum-v1_best.yml").exists()  # no completed trial, no best YAML


def test_unreachable_storage_is_a_clear_value_error() -> None:
    url = "postgresql+psycopg2://someone:secret@127.0.0.1:9/nodb"
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:9") as err:
        tuning.make_storage(url)
    assert "secret" not in str(err.value)
    assert "--storage" in str(err.value) or "pip install" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# Shared storage through a real PostgreSQL server (.ci/postgres.sh starts one on 127.0.0.1)
# ---------------------------------------------------------------------------------------------------------------


def _pg_url() -> str:
    url = os.environ.get("SB3_VLA_TEST_PG_URL")
    path = Path(os.environ.get("SB3_VLA_PG_DIR", "/tmp/sb3_vla_pg")) / "url"
    if not url and path.is_file():
        url = path.read_text().strip()
    if not url:
        pytest.skip("no PostgreSQL server: run .ci/postgres.sh (or set SB3_VLA_TEST_PG_URL)")
    try:
        tuning.make_storage(url, heartbeat_interval=None)
    except ValueError as e:
        pytest.skip(f"PostgreSQL at {tuning.safe_url(url)} is not reachable: {e}")
    return url


def _worker(url: str, name: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = ["-m", "sb3_vla.tune", "--algo", "sac", "--env", "Pendulum-v1", "--storage", url, "--study-name", name,
           "-f", str(log), "--verbose", "0", "--heartbeat-interval", "1", "--heartbeat-grace", "3",
           "-params", BASE, "learning_starts:150", *extra]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, *cmd], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_workers_share_one_postgres_study(tmp_path: Path) -> None:
    url = _pg_url()
    name = f"shared-{uuid.uuid4().hex[:8]}"
    workers = [_worker(url, name, tmp_path / f"w{i}", "--n-trials", "2", *TINY) for i in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=300)
        assert w.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name=name, storage=tuning.make_storage(url, heartbeat_interval=None))
    assert len(study.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    by_worker: dict[str, int] = {}
    for t in study.trials:
        by_worker[t.user_attrs["worker"]] = by_worker.get(t.user_attrs["worker"], 0) + 1
    assert sorted(by_worker.values()) == [2, 2], by_worker


def test_killed_worker_leaves_the_study_usable(tmp_path: Path) -> None:
    """SIGKILL mid-trial: the trial stays RUNNING until another worker starts a trial after the heartbeat grace
    period, which marks it FAIL; the study keeps working."""
    url = _pg_url()
    name = f"killed-{uuid.uuid4().hex[:8]}"
    storage = tuning.make_storage(url, heartbeat_interval=None)
    victim = _worker(url, name, tmp_path / "a", "--n-trials", "1", "-n", "100000", "--n-evaluations", "1")
    deadline = time.time() + 120
    running: list = []
    while time.time() < deadline and not running:
        time.sleep(1)
        with contextlib.suppress(KeyError):  # KeyError: the study is not created yet
            running = optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.RUNNING,))
    assert running, "the first worker never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert optuna.load_study(study_name=name, storage=storage).trials[0].state == TrialState.RUNNING
    time.sleep(4)  # past the grace period
    survivor = _worker(url, name, tmp_path / "b", "--n-trials", "1", *TINY)
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE] or [t.state for t in trials] == [
        TrialState.FAIL,
        TrialState.PRUNED,
    ]


def test_trial_evaluations_use_the_same_seeded_episodes() -> None:
    import optuna
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    trial = optuna.create_study(direction="maximize").ask()
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=123)
    model = SAC("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=0), learning_starts=10_000, seed=0)
    cb = tuning.TrialEvalCallback(eval_env, trial, n_eval_episodes=2, eval_freq=100, eval_seed=10_000)
    model.learn(300, callback=cb)  # no gradient step yet: the same policy at every evaluation
    assert len(cb.evaluations_results) == 3
    assert cb.evaluations_results[0] == cb.evaluations_results[1] == cb.evaluations_results[2]
    assert cb.evaluations_results[0][0] != cb.evaluations_results[0][1]  # two different episodes
    assert cb.eval_idx == 3 and np.isfinite(cb.last_mean_reward)
