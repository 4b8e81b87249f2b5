"""The Optuna side of a study: its storage (SQLite by default; PostgreSQL / MySQL shared by several workers, with
heartbeats; or a journal file), sampler, pruner, and the evaluation callback that reports to the trial.

With an RDB storage each running trial sends a heartbeat; a worker that dies mid-trial leaves its trial RUNNING
until another worker starts a trial after ``grace_period`` seconds, which marks it FAIL.

>>> default_storage("/tmp/logs", "sac", "Pendulum-v1")
'sqlite:////tmp/logs/sac/Pendulum-v1_optuna.db'
>>> safe_url("postgresql://me:secret@db/study")
'postgresql://me:***@db/study'
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from stable_baselines3.common.vec_env import VecEnv

from sb3_vla.evaluation import FixedSeedEvalCallback
from sb3_vla.run_folder import env_folder_name


def default_storage(log_folder: str, algo: str, env_id: str) -> str:
    """``sqlite:///<log_folder>/<algo>/<env>_optuna.db`` (absolute)."""
    return f"sqlite:///{(Path(log_folder) / algo / f'{env_folder_name(env_id)}_optuna.db').resolve()}"


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg (v3) in SQLAlchemy >= 2.1; use psycopg2 when only that one is installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
    return url


def make_storage(
    url: str, heartbeat_interval: int | None = 60, grace_period: int | None = 180
) -> optuna.storages.BaseStorage:
    """Open an Optuna storage: an RDB URL (``sqlite:///f.db``, ``postgresql://...``) or a journal file (``*.log``).

    :param url: the storage URL or journal path.
    :param heartbeat_interval: seconds between a running trial's heartbeats (RDB only; None: off).
    :param grace_period: seconds without a heartbeat after which another worker marks a RUNNING trial FAIL.
    :raises ValueError: the database is unreachable or its driver is missing (the message names the URL and fix).
    """
    if url.endswith(".log") and "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    url = _with_driver(url)
    try:
        with (
            warnings.catch_warnings()
        ):  # heartbeats are "experimental" in Optuna, and the way to recover from dead workers
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period if heartbeat_interval else None,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
    except (ModuleNotFoundError, ImportError) as e:
        raise ValueError(
            f"cannot open the Optuna storage {safe_url(url)!r}: its database driver is missing ({e}). "
            "For PostgreSQL: pip install psycopg2-binary (or psycopg) and use postgresql+psycopg2://user:pw@host/db"
        ) from e
    except Exception as e:  # sqlalchemy OperationalError / ArgumentError and friends
        raise ValueError(
            f"cannot reach the Optuna storage {safe_url(url)!r}: {type(e).__name__}: {str(e).splitlines()[0]}. "
            "Check that the database server runs and accepts this host, port, user, password and database "
            "(for the tests: .ci/postgres.sh), or omit --storage to use a local SQLite file"
        ) from e


def make_sampler(name: str, seed: int | None, n_startup_trials: int) -> BaseSampler:
    """``tpe`` (multivariate TPE, rl-zoo's default) or ``random``."""
    if name == "tpe":
        return TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True)
    if name == "random":
        return RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose tpe or random")


def make_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> BasePruner:
    """``median`` (MedianPruner), ``halving`` (successive halving) or ``none``."""
    if name == "median":
        return MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if name == "halving":
        return SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    if name == "none":
        return NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose median, halving or none")


class TrialEvalCallback(FixedSeedEvalCallback):
    """Evaluate every ``eval_freq`` calls on the same seeded episodes (so every trial of a study, and every
    evaluation of a trial, is judged on the same episodes), report the mean return to the trial and stop when it
    should be pruned.

    A non-finite mean return (a diverged policy or env) stops training and marks the trial for pruning.
    """

    def __init__(
        self, eval_env: VecEnv, trial: optuna.Trial, n_eval_episodes: int, eval_freq: int, eval_seed: int = 0
    ) -> None:
        super().__init__(
            eval_env,
            eval_seed=eval_seed,
            base_reference=False,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            deterministic=True,
            verbose=0,
        )
        self.trial = trial
        self.eval_idx = 0
        self.is_pruned = False
        self.prune_reason = ""

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            return self._evaluate() and self.report()
        return True

    def report(self) -> bool:
        """Report the last evaluation; False when the trial must stop."""
        self.eval_idx += 1
        if not math.isfinite(self.last_mean_reward):
            self.is_pruned, self.prune_reason = True, f"non-finite mean return {self.last_mean_reward}"
            return False
        self.trial.report(self.last_mean_reward, self.eval_idx)
        if self.trial.should_prune():
            self.is_pruned, self.prune_reason = True, f"pruned at evaluation {self.eval_idx}"
            return False
        return True
