"""Repeatable evaluation: the same seeded episodes every time, the base's score on them, confidence intervals.

Episode ``j`` of an evaluation always starts from ``env.reset(seed=seed + j)``, whatever the policy did before and
however many eval envs there are, so two evaluations of one policy give the same numbers and two policies are
compared on the same episodes (a paired comparison: each changed episode is a real change, not sampling noise).
Used by :class:`FixedSeedEvalCallback` (``sb3_vla.train``'s evaluations and ``best_model.zip``) and by
``python -m sb3_vla.evaluate``.

With 20 episodes (``sb3_vla.train``'s default) each episode is 5 points of success rate, so a 10-point change is two
episodes turning; a 95% Wilson interval at 50% success is still about +-20 points wide, so judge small gains over
several evaluations or seeds, or raise ``--eval-episodes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, sync_envs_normalization

from sb3_vla.wrappers.residual import VecResidualActionWrapper


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate ``successes / n`` (better than the normal one near 0 and 1).

    Example::

        >>> [round(x, 3) for x in wilson_interval(10, 20)]
        [0.299, 0.701]
    """
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded: the same values give the same interval).

    Example::

        >>> lo, hi = bootstrap_interval(np.array([1.0, 2.0, 3.0, 4.0]))
        >>> 1.0 <= lo < 2.5 < hi <= 4.0
        True
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass
class EpisodeResults:
    """The episodes of one evaluation, in seed order.

    :param seeds: the reset seed of each episode, ``(N,)``.
    :param returns: undiscounted episode returns (the Monitor's, when the env has one), ``(N,)``.
    :param lengths: episode lengths in env steps, ``(N,)``.
    :param successes: ``info["is_success"]`` at each episode's end, ``(N,)`` bool, or ``None`` when the env
        reports no success.
    """

    seeds: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    successes: np.ndarray | None

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def success_rate(self) -> float | None:
        return None if self.successes is None else float(np.mean(self.successes))

    def score(self) -> tuple[float, float]:
        """What best-model selection maximises: ``(success rate, mean return)``, or ``(mean return, 0)`` without a
        success signal (tuples compare the success rate first, the return breaks ties)."""
        rate = self.success_rate
        return (rate, self.mean_return) if rate is not None else (self.mean_return, 0.0)

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        """Means with confidence intervals: ``episodes``, ``mean_return``, ``return_ci`` (bootstrap) and, when the
        env reports success, ``success_rate`` and ``success_ci`` (Wilson)."""
        out: dict[str, Any] = {
            "episodes": int(len(self.returns)),
            "mean_return": self.mean_return,
            "return_ci": bootstrap_interval(self.returns, confidence),
            "mean_length": float(np.mean(self.lengths)),
        }
        if self.successes is not None:
            out["success_rate"] = self.success_rate
            out["success_ci"] = wilson_interval(int(np.sum(self.successes)), len(self.successes), confidence)
        return out

    def describe(self, confidence: float = 0.95) -> str:
        """One line: success rate (or return) with its interval."""
        s = self.summary(confidence)
        pct = f"{round(confidence * 100)}%"
        ret = f"return {s['mean_return']:.2f} [{s['return_ci'][0]:.2f}, {s['return_ci'][1]:.2f}]"
        if "success_rate" in s:
            lo, hi = s["success_ci"]
            n_ok = int(np.sum(self.successes))  # type: ignore[arg-type]
            return (
                f"success {100 * s['success_rate']:.0f}% ({n_ok}/{s['episodes']}, {pct} CI "
                f"[{100 * lo:.0f}, {100 * hi:.0f}]), {ret}"
            )
        return f"{ret} ({pct} CI, {s['episodes']} episodes)"


class ZeroResidualPolicy:
    """A predictor with SB3's ``predict`` signature that always outputs zeros: through the residual wrappers the
    env executes the base's own action (dims in ``absolute_dims`` get the middle of their range).

    Example::

        >>> policy = ZeroResidualPolicy(spaces.Box(-1, 1, (3,)))
        >>> policy.predict({"obs": np.zeros((2, 5))})[0].shape
        (2, 3)
    """

    def __init__(self, action_space: spaces.Space) -> None:
        if not isinstance(action_space, spaces.Box):
            raise TypeError(f"ZeroResidualPolicy needs a Box action space (the residual), got {action_space}")
        self.action_space = action_space

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        first = next(iter(observation.values())) if isinstance(observation, dict) else observation
        n = int(np.asarray(first).shape[0])
        return np.zeros((n, *self.action_space.shape), dtype=np.float32), None


def has_residual_wrapper(venv: VecEnv) -> bool:
    """Whether ``venv``'s wrapper chain holds :class:`~sb3_vla.wrappers.VecResidualActionWrapper` (a base to judge)."""
    v: Any = venv
    while isinstance(v, VecEnvWrapper):
        if isinstance(v, VecResidualActionWrapper):
            return True
        v = v.venv
    return False


def evaluate_episodes(
    model: Any, venv: VecEnv, n_episodes: int, seed: int = 0, deterministic: bool = True
) -> EpisodeResults:
    """Run ``n_episodes`` episodes, episode ``j`` from ``reset(seed=seed + j)``, and collect their outcomes.

    Episodes run in rounds of ``venv.num_envs``: each round re-seeds the envs (``venv.seed``) and resets them; an env
    whose episode ended keeps stepping (its auto-reset episode is ignored) until the round's last episode ends.

    :param model: anything with SB3's ``predict(obs, state, episode_start, deterministic)`` (an algorithm, a
        policy, :class:`ZeroResidualPolicy`).
    :param venv: the eval env stack (with VecNormalize in eval mode if the run normalises).
    :param n_episodes: number of episodes.
    :param seed: reset seed of episode 0.
    :param deterministic: deterministic actions (the policy's mean).
    :return: the episodes in seed order.

    Example::

        >>> from sb3_vla import make_residual_vec_env
        >>> venv = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=2, env_kwargs=dict(max_episode_steps=20))
        >>> results = evaluate_episodes(ZeroResidualPolicy(venv.action_space), venv, n_episodes=3, seed=10_000)
        >>> results.seeds.tolist(), results.lengths.tolist()
        ([10000, 10001, 10002], [20, 20, 20])
        >>> again = evaluate_episodes(ZeroResidualPolicy(venv.action_space), venv, n_episodes=3, seed=10_000)
        >>> bool(np.array_equal(results.returns, again.returns))  # the same episodes every time
        True
        >>> print(results.describe())  # doctest: +ELLIPSIS
        return -... [-..., -...] (95% CI, 3 episodes)
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    n = venv.num_envs
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool | None] = []
    for start in range(0, n_episodes, n):
        count = min(n, n_episodes - start)
        venv.seed(seed + start)
        obs = venv.reset()
        state = None
        episode_start = np.ones(n, dtype=bool)
        active = np.arange(n) < count
        ret, length = np.zeros(n), np.zeros(n, dtype=np.int64)
        out_r, out_l = [0.0] * count, [0] * count
        out_s: list[bool | None] = [None] * count
        while active.any():
            actions, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
            obs, rewards, dones, infos = venv.step(actions)
            for i in np.flatnonzero(active):
                ret[i] += float(rewards[i])
                length[i] += 1
                if not dones[i]:
                    continue
                episode = infos[i].get("episode")  # the Monitor's return: unchanged by reward wrappers
                out_r[i] = float(episode["r"]) if episode else float(ret[i])
                out_l[i] = int(episode["l"]) if episode else int(length[i])
                flag = infos[i].get("is_success")
                out_s[i] = None if flag is None else bool(flag)
                active[i] = False
            episode_start = np.asarray(dones, dtype=bool)
        returns += out_r
        lengths += out_l
        successes += out_s
    known = [s for s in successes if s is not None]
    return EpisodeResults(
        seeds=np.arange(seed, seed + n_episodes, dtype=np.int64),
        returns=np.asarray(returns, dtype=np.float64),
        lengths=np.asarray(lengths, dtype=np.int64),
        successes=np.asarray([bool(s) for s in successes]) if len(known) == len(successes) else None,
    )


class FixedSeedEvalCallback(EvalCallback):
    """SB3's :class:`~stable_baselines3.common.callbacks.EvalCallback` on the same seeded episodes every time, with
    the base's score on them as the reference.

    Every evaluation runs :func:`evaluate_episodes` with seeds ``eval_seed .. eval_seed + n_eval_episodes - 1``.
    At training start the base alone (:class:`ZeroResidualPolicy`) is evaluated once on the same episodes and logged
    as ``eval/base_mean_reward`` and ``eval/base_success_rate``. ``best_model.zip`` is the best evaluation by
    success rate (mean return breaks ties), or by mean return when the env reports no success.
    ``evaluations.npz`` keeps SB3's keys (``timesteps``, ``results``, ``ep_lengths``, ``successes``; rl-zoo's plots
    read them) plus ``seeds`` and, with a base, ``base_results``, ``base_ep_lengths``, ``base_successes``. A resumed
    run continues the file: earlier evaluations and the base reference are kept.

    :param eval_env: the eval env stack.
    :param eval_seed: reset seed of the first episode.
    :param base_reference: evaluate the base at the start; ``None``: when the env has the residual wrappers.
    :param n_eval_episodes: episodes per evaluation.
    :param eval_freq: evaluate every this many callback calls (env steps / ``n_envs``).
    :param log_path: folder of ``evaluations.npz``.
    :param best_model_save_path: folder of ``best_model.zip``.

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_vec_env
        >>> from sb3_vla.policies import ResidualSACPolicy
        >>> def make(n_envs):
        ...     return make_residual_vec_env("Pendulum-v1", base="zero", n_envs=n_envs,
        ...                                  env_kwargs=dict(max_episode_steps=20))
        >>> cb = FixedSeedEvalCallback(make(1), eval_seed=10_000, n_eval_episodes=2, eval_freq=16, verbose=0)
        >>> model = SAC(ResidualSACPolicy, make(1), buffer_size=1000)
        >>> _ = model.learn(32, callback=cb)
        >>> cb.seeds.tolist(), cb.evaluations_timesteps
        ([10000, 10001], [16, 32])
        >>> bool(np.allclose(cb.last_results.returns, cb.base_results.returns))  # zero residual: the base's score
        True
    """

    def __init__(
        self,
        eval_env: VecEnv,
        eval_seed: int = 0,
        base_reference: bool | None = None,
        n_eval_episodes: int = 20,
        eval_freq: int = 10_000,
        log_path: str | None = None,
        best_model_save_path: str | None = None,
        deterministic: bool = True,
        verbose: int = 1,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
    ) -> None:
        super().__init__(
            eval_env,
            callback_on_new_best=callback_on_new_best,
            callback_after_eval=callback_after_eval,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            log_path=log_path,
            best_model_save_path=best_model_save_path,
            deterministic=deterministic,
            verbose=verbose,
        )
        self.eval_seed = int(eval_seed)
        self.base_reference = has_residual_wrapper(self.eval_env) if base_reference is None else bool(base_reference)
        self.base_results: EpisodeResults | None = None
        self.last_results: EpisodeResults | None = None
        self.best_results: EpisodeResults | None = None
        self.best_score: tuple[float, float] = (-np.inf, -np.inf)
        self.best_timestep = -1

    @property
    def seeds(self) -> np.ndarray:
        """The reset seeds of the evaluation episodes."""
        return np.arange(self.eval_seed, self.eval_seed + self.n_eval_episodes, dtype=np.int64)

    def _init_callback(self) -> None:
        super()._init_callback()
        if self.log_path is not None and os.path.isfile(self.log_path + ".npz"):
            self._load_previous(self.log_path + ".npz")

    def _load_previous(self, path: str) -> None:
        """Continue a resumed run's ``evaluations.npz`` (same seeds only; evaluations past the resume step dropped)."""
        with np.load(path) as data:
            if "seeds" not in data.files or not np.array_equal(data["seeds"], self.seeds):
                return
            keep = np.asarray(data["timesteps"]) <= self.model.num_timesteps
            self.evaluations_timesteps = [int(t) for t in np.asarray(data["timesteps"])[keep]]
            self.evaluations_results = [list(r) for r in np.asarray(data["results"])[keep]]
            self.evaluations_length = [list(r) for r in np.asarray(data["ep_lengths"])[keep]]
            if "successes" in data.files:
                self.evaluations_successes = [list(r) for r in np.asarray(data["successes"])[keep]]
            if "base_results" in data.files:
                succ = data["base_successes"] if "base_successes" in data.files else None
                self.base_results = EpisodeResults(
                    self.seeds, np.asarray(data["base_results"]), np.asarray(data["base_ep_lengths"]), succ
                )
        for i, rewards in enumerate(self.evaluations_results):
            ok = np.asarray(self.evaluations_successes[i]) if self.evaluations_successes else None
            old = EpisodeResults(self.seeds, np.asarray(rewards), np.zeros(len(rewards)), ok)
            self.best_score = max(self.best_score, old.score())
        self.best_mean_reward = max([float(np.mean(r)) for r in self.evaluations_results] or [-np.inf])

    def _on_training_start(self) -> None:
        if self.base_reference and self.base_results is None:
            policy = ZeroResidualPolicy(self.eval_env.action_space)
            self.base_results = evaluate_episodes(policy, self.eval_env, self.n_eval_episodes, self.eval_seed)
            self._log_results("eval/base_", self.base_results)
            if self.verbose >= 1:
                print(f"Base alone on the {self.n_eval_episodes} eval episodes: {self.base_results.describe()}")
            self._save()
            self.logger.dump(self.num_timesteps)

    def _log_results(self, prefix: str, results: EpisodeResults) -> None:
        self.logger.record(prefix + "mean_reward", results.mean_return)
        self.logger.record(prefix + "mean_ep_length", float(np.mean(results.lengths)))
        if results.success_rate is not None:
            self.logger.record(prefix + "success_rate", results.success_rate)

    def _save(self) -> None:
        if self.log_path is None:
            return
        arrays: dict[str, Any] = {
            "timesteps": np.asarray(self.evaluations_timesteps, dtype=np.int64),
            "results": np.asarray(self.evaluations_results, dtype=np.float64).reshape(-1, self.n_eval_episodes),
            "ep_lengths": np.asarray(self.evaluations_length, dtype=np.int64).reshape(-1, self.n_eval_episodes),
            "seeds": self.seeds,
        }
        if self.evaluations_successes:
            arrays["successes"] = np.asarray(self.evaluations_successes, dtype=bool)
        if self.base_results is not None:
            arrays["base_results"] = self.base_results.returns
            arrays["base_ep_lengths"] = self.base_results.lengths
            if self.base_results.successes is not None:
                arrays["base_successes"] = self.base_results.successes
        np.savez(self.log_path, **arrays)

    def _on_step(self) -> bool:
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return True
        return self._evaluate()

    def evaluate_now(self) -> EpisodeResults:
        """Evaluate the model as it is now; ``sb3_vla.train`` calls this after training, so the curve and the
        summary end at the saved final policy. An evaluation logged at the same step during training (before that
        step's gradient updates) is replaced."""
        if self.evaluations_timesteps and self.evaluations_timesteps[-1] == self.model.num_timesteps:
            self.evaluations_timesteps.pop()
            self.evaluations_results.pop()
            self.evaluations_length.pop()
            if self.evaluations_successes:
                self.evaluations_successes.pop()
        self._evaluate()
        assert self.last_results is not None
        return self.last_results

    def _evaluate(self) -> bool:
        if self.model.get_vec_normalize_env() is not None:
            sync_envs_normalization(self.training_env, self.eval_env)
        results = evaluate_episodes(self.model, self.eval_env, self.n_eval_episodes, self.eval_seed, self.deterministic)
        self.last_results = results
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(results.returns.tolist())
        self.evaluations_length.append(results.lengths.tolist())
        if results.successes is not None:
            self.evaluations_successes.append(results.successes.tolist())
            self._is_success_buffer = results.successes.tolist()
        self._save()
        self.last_mean_reward = results.mean_return
        if self.verbose >= 1:
            ref = ""
            if self.base_results is not None:
                rate = self.base_results.success_rate
                ref = (
                    f" (base: {100 * rate:.0f}%)"
                    if rate is not None
                    else f" (base: {self.base_results.mean_return:.2f})"
                )
            print(f"Eval num_timesteps={self.num_timesteps}: {results.describe()}{ref}")
        self._log_results("eval/", results)
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        continue_training = True
        if results.score() > self.best_score:
            self.best_score = results.score()
            self.best_results = results
            self.best_timestep = self.num_timesteps
            self.best_mean_reward = results.mean_return
            if self.verbose >= 1:
                print("New best evaluation")
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:
            continue_training = continue_training and self._on_event()
        return continue_training


def run_summary(eval_cb: FixedSeedEvalCallback | None, cost: Any | None = None) -> str:
    """The end-of-run summary of ``sb3_vla.train``: the base and the trained policy on the same seeded episodes,
    and the base's cost (``cost``: a :class:`~sb3_vla.base_cost.BaseCostCallback`)."""
    lines = []
    if eval_cb is not None:
        seeds = eval_cb.seeds
        lines.append(f"Evaluation on the same {len(seeds)} seeded episodes (seeds {seeds[0]}-{seeds[-1]}):")
        if eval_cb.base_results is not None:
            lines.append(f"  base alone:    {eval_cb.base_results.describe()}")
        if eval_cb.last_results is not None:
            lines.append(f"  final policy:  {eval_cb.last_results.describe()} at step {eval_cb.num_timesteps}")
        if eval_cb.best_results is not None and eval_cb.best_results is not eval_cb.last_results:
            lines.append(
                f"  best policy:   {eval_cb.best_results.describe()} at step {eval_cb.best_timestep} (best_model.zip)"
            )
    if cost is not None:
        lines.append(cost.describe())
    return "\n".join(lines)
