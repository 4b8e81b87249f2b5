"""The best-trial YAML carries the study's intended training budget, not the short budget of each trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from sb3_vla import tuning  # noqa: E402
from sb3_vla.cli import tune_parser  # noqa: E402


def _best_entry(tmp_path: Path, *flags: str) -> tuple[dict, str]:
    args = tune_parser().parse_args(["--algo", "sac", "--env", "Pendulum-v1", "-n", "200", *flags])
    setup = tuning.make_setup(args)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    tuning.sample_residual_params(trial, setup.space)
    study.tell(trial, -100.0)
    path = tuning.write_best_yaml(study, setup, tmp_path / "best.yml")
    return yaml.safe_load(path.read_text())["Pendulum-v1"], path.read_text()


def test_best_yaml_keeps_the_yaml_entry_budget(tmp_path: Path) -> None:
    entry, text = _best_entry(tmp_path)
    assert entry["n_timesteps"] == 20000  # zoo_configs/sac.yml's Pendulum-v1 entry, not the trials' -n 200
    assert "each trial trained 200 steps" in text


def test_final_timesteps_flag_sets_the_budget(tmp_path: Path) -> None:
    entry, _ = _best_entry(tmp_path, "--final-timesteps", "5000")
    assert entry["n_timesteps"] == 5000
