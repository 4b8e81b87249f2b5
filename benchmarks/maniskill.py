"""ManiSkill3 benchmark: env throughput (raw vs ours vs ours + residual wrappers), VecEnv conversion cost against
ManiSkill's own SB3 bridge, and the scripted bases' success rates.

Run (CPU, about 5 minutes) from the repo root: ``python -m benchmarks.maniskill``; ``--quick`` for a smoke run;
``--sac`` also runs the residual SAC comparison (long on CPU).
Figures go to the ``maniskill`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from benchmarks._results import write_section


# ---------------------------------------------------------------------------------------------------------------- #
# 1. env throughput
def _raw_env(task: str, obs_mode: str) -> Any:
    import mani_skill.envs  # noqa: F401

    kwargs: dict[str, Any] = dict(obs_mode=obs_mode, control_mode="pd_ee_delta_pose", num_envs=1, sim_backend="cpu")
    if not th.cuda.is_available():
        kwargs["render_backend"] = "cpu"
    if "rgb" in obs_mode:
        kwargs["sensor_configs"] = dict(width=128, height=128)
    return gym.make(task, **kwargs)


def _build(task: str, obs_mode: str, variant: str) -> Any:
    from sb3_vla.envs.maniskill import ManiSkillEnv

    if variant == "raw":
        return _raw_env(task, obs_mode)
    env: Any = ManiSkillEnv(task, obs_mode=obs_mode, image_size=128)
    if variant.startswith("ours+residual"):
        from sb3_vla.wrappers import ResidualActionWrapper, VLAObservationWrapper

        env = ResidualActionWrapper(VLAObservationWrapper(env, base=variant.rsplit("-", 1)[1]), residual_scale=0.2)
    return env


def _run(env: Any, raw: bool, actions: np.ndarray) -> float:
    acts: Any = th.as_tensor(actions) if raw else actions
    t0 = time.perf_counter()
    for i in range(len(actions)):
        _, _, term, trunc, _ = env.step(acts[i : i + 1] if raw else acts[i])
        if (bool(term[0]) or bool(trunc[0])) if raw else (term or trunc):
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def steps_per_second(
    task: str, obs_mode: str, variants: list[str], n_steps: int, rounds: int = 3, seed: int = 0
) -> dict[str, float]:
    """Env steps per second with random actions (resets included), best of ``rounds`` interleaved rounds.

    The variants run in turns so that load from other processes on a shared machine hits them alike.

    :param variants: among ``"raw"`` (ManiSkill's batched torch env, one sub-env), ``"ours"`` (:class:`ManiSkillEnv`),
        ``"ours+residual-zero"`` (ours under VLAObservationWrapper + ResidualActionWrapper with the zero base) and
        ``"ours+residual-scripted"`` (the same with the scripted base, whose controller runs every step).
    """
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(n_steps, 7)).astype(np.float32)
    envs = {v: _build(task, obs_mode, v) for v in variants}
    for env in envs.values():
        env.reset(seed=seed)
    best = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        for v, env in envs.items():
            best[v] = max(best[v], _run(env, v == "raw", actions))
    for env in envs.values():
        env.close()
    return best


# ---------------------------------------------------------------------------------------------------------------- #
# 2. VecEnv conversion cost on a zero-cost fake batched simulator
class FakeBatchedSim:
    """Returns tensors shaped like a batched ManiSkill state env, at (almost) no simulation cost.

    Episodes of ``horizon`` steps, staggered so about ``num_envs / horizon`` sub-envs finish at every step, like a
    running training. Serves both bridges: ours (:class:`ManiSkillVecEnv`) and ManiSkill's ``ManiSkillSB3VectorEnv``.
    """

    def __init__(self, num_envs: int, dim: int = 42, horizon: int = 50, device: str = "cpu") -> None:
        self.num_envs, self.dim, self.horizon = num_envs, dim, horizon
        self.device = th.device(device)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.single_action_space = spaces.Box(-1, 1, (7,), np.float32)
        self.t = th.arange(num_envs, device=self.device) % horizon
        self.obs = th.randn(num_envs, dim, device=self.device)

    @property
    def unwrapped(self) -> FakeBatchedSim:
        return self

    def get_obs(self) -> th.Tensor:
        return self.obs.clone()

    def reset(self, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[th.Tensor, dict[str, Any]]:
        if options and "env_idx" in options:
            self.t[th.as_tensor(options["env_idx"], device=self.device)] = 0
        else:
            self.t[:] = 0
        return self.get_obs(), {}

    def step(self, action: Any) -> tuple[Any, ...]:
        self.t += 1
        truncated = self.t >= self.horizon
        success = (self.t % 17) == 0
        return self.get_obs(), self.obs[:, 0].clone(), success.clone(), truncated, {"success": success}

    def close(self) -> None:
        pass


def conversion_cost(num_envs: int, n_steps: int) -> dict[str, float]:
    """Milliseconds per ``step`` of each bridge over the fake simulator (minus the fake simulator's own step)."""
    from mani_skill.vector.wrappers.sb3 import ManiSkillSB3VectorEnv

    from sb3_vla.envs.maniskill.vec_env import ManiSkillVecEnv

    actions = np.zeros((num_envs, 7), dtype=np.float32)
    out: dict[str, float] = {}
    sim = FakeBatchedSim(num_envs)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        sim.step(actions)
        done = sim.t >= sim.horizon
        if done.any():
            sim.reset(options={"env_idx": done.nonzero().reshape(-1)})
    out["sim"] = (time.perf_counter() - t0) / n_steps * 1e3
    for name, make in (
        ("ours", lambda: ManiSkillVecEnv("PickCube-v1", env=FakeBatchedSim(num_envs))),  # type: ignore[arg-type]
        ("maniskill_sb3", lambda: ManiSkillSB3VectorEnv(FakeBatchedSim(num_envs))),
    ):
        venv = make()
        venv.reset()
        for _ in range(3):
            venv.step(actions)
        t0 = time.perf_counter()
        for _ in range(n_steps):
            venv.step(actions)
        out[name] = (time.perf_counter() - t0) / n_steps * 1e3 - out["sim"]
    return out


# ---------------------------------------------------------------------------------------------------------------- #
# 3. scripted base success rate
def scripted_success(task: str, episodes: int, noise: bool = True, seed0: int = 1000) -> tuple[float, float]:
    """Success rate (and mean episode length) of the scripted base alone, over seeded episodes."""
    from sb3_vla.envs.maniskill import ManiSkillEnv

    kwargs: dict[str, Any] = {} if noise else dict(scripted_action_noise=0.0, scripted_target_noise=0.0)
    # an episode ends at its first success: the length column is the time to success
    env = ManiSkillEnv(task, ignore_terminations=False, **kwargs)
    wins, lengths = [], []
    for ep in range(episodes):
        env.reset(seed=seed0 + ep)
        steps = 0
        while True:
            _, _, term, trunc, info = env.step(env.scripted_action())
            steps += 1
            if term or trunc:
                break
        wins.append(info["is_success"])
        lengths.append(steps)
    env.close()
    return float(np.mean(wins)), float(np.mean(lengths))


# ---------------------------------------------------------------------------------------------------------------- #
# 4. residual SAC over the scripted base (long on CPU; run with --sac)
def residual_sac(
    task: str = "PushCube-v1", total_steps: int = 20_000, eval_episodes: int = 50, seed: int = 0
) -> dict[str, float]:
    """Train residual SAC on the noisy scripted base and compare success rates on the same evaluation seeds.

    :return: ``{"base": success of the base alone (residual 0), "residual": success after training}``.
    """
    from stable_baselines3 import SAC

    from sb3_vla import ResidualSACPolicy, VLAFeaturesExtractor, make_residual_vec_env

    env_id = f"ManiSkill-{task}"
    venv = make_residual_vec_env(env_id, base="scripted", n_envs=1, residual_scale=0.3, seed=seed)
    model = SAC(
        ResidualSACPolicy,  # residual head starts at ~0: step 0 executes the base action
        venv,
        learning_starts=1000,
        policy_kwargs=dict(features_extractor_class=VLAFeaturesExtractor),
        seed=seed,
        verbose=0,
    )

    def evaluate(policy: Any) -> float:
        env = make_residual_vec_env(env_id, base="scripted", n_envs=1, residual_scale=0.3, seed=10_000)
        wins: list[float] = []
        obs = env.reset()
        while len(wins) < eval_episodes:
            act = np.zeros((1, 7), np.float32) if policy is None else policy.predict(obs, deterministic=True)[0]
            obs, _, dones, infos = env.step(act)
            if dones[0]:
                wins.append(bool(infos[0].get("is_success", False)))
        env.close()
        return float(np.mean(wins))

    before = evaluate(None)
    model.learn(total_steps)
    return {"base": before, "residual": evaluate(model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few steps and episodes (smoke run)")
    parser.add_argument("--sac", action="store_true", help="also run the residual SAC comparison")
    parser.add_argument("--sac-steps", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args()
    q = args.quick
    th.set_num_threads(1)

    lines = ["## ManiSkill3 (`benchmarks/maniskill.py`)", ""]
    lines += [
        "CPU simulation, one env, random actions, resets included, best of 3 interleaved rounds.",
        "`ours` = `ManiSkillEnv` (numpy Dict obs);",
        "`+residual` adds `VLAObservationWrapper` + `ResidualActionWrapper` with the zero base, or with the",
        "scripted base (its controller runs every step).",
        "",
        "| task | obs | raw ManiSkill steps/s | ours steps/s | ours + residual (zero base) | "
        "ours + residual (scripted base) |",
        "|---|---|---|---|---|---|",
    ]
    cases = [("PickCube-v1", "state", 600), ("PickCube-v1", "rgb", 80), ("PushCube-v1", "state", 600)]
    cases += [("PegInsertionSide-v1", "state", 200)]
    for task, mode, n in cases:
        n = max(20, n // 10) if q else n
        variants = ["raw", "ours", "ours+residual-zero", "ours+residual-scripted"]
        rates = steps_per_second(task, mode, variants, n, rounds=1 if q else 3)
        cells = [f"{rates[v]:.0f}" for v in variants]
        obs = mode if mode == "state" else f"{mode} 128x128"
        lines.append(f"| {task} | {obs} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)

    lines += [
        "",
        "VecEnv bridge cost per step (ms, CPU tensors, state obs 42-D, 50-step staggered episodes, a zero-cost",
        "fake simulator; its own step time subtracted). `ours` = `ManiSkillVecEnv`, `maniskill_sb3` =",
        "`mani_skill.vector.wrappers.sb3.ManiSkillSB3VectorEnv`. On a GPU the ManiSkill bridge also does two",
        "device-to-host copies of the return/length vectors *per env* per step, which this CPU run does not show.",
        "",
        "| num_envs | ours ms/step | ManiSkill SB3 bridge ms/step | ratio |",
        "|---|---|---|---|",
    ]
    for n in (16, 256, 1024) if not q else (16, 256):
        c = conversion_cost(n, 50 if q else 200)
        lines.append(
            f"| {n} | {c['ours']:.3f} | {c['maniskill_sb3']:.3f} | {c['maniskill_sb3'] / max(c['ours'], 1e-9):.1f}x |"
        )
        print(lines[-1], flush=True)

    from sb3_vla.envs.maniskill import TASKS

    episodes = 10 if q else 50
    lines += [
        "",
        f"Scripted bases (closed-loop, `pd_ee_delta_pose`), {episodes} seeded episodes each (seeds 1000+), default",
        "noise from the task table vs no noise (20 episodes).",
        "",
        "| task | action noise std | target xy noise std (m) | success (default noise) | mean length | "
        "success (no noise) |",
        "|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        rate, length = scripted_success(task, episodes)
        clean, _ = scripted_success(task, 4 if q else 20, noise=False)
        t = TASKS[task]
        lines.append(
            f"| {task} | {t.action_noise_std} | {t.target_noise_std} | {rate:.0%} | {length:.1f} | {clean:.0%} |"
        )
        print(lines[-1], flush=True)

    if args.sac:
        res = residual_sac(total_steps=args.sac_steps)
        lines += [
            "",
            f"Residual SAC on PushCube-v1, {args.sac_steps} steps: base {res['base']:.0%} -> "
            f"residual {res['residual']:.0%} success (50 evaluation episodes).",
        ]
        print(lines[-1], flush=True)

    load = os.getloadavg()
    lines += ["", f"Load average (1, 5, 15 min) at the end of the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write and not q:
        write_section("maniskill", body)


if __name__ == "__main__":
    main()
