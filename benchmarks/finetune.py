"""Strategy 4 vs the residual strategies on Pendulum-v1: fine-tune a pretrained module's head with PPO, or keep it
frozen as the base and learn a residual on top (SAC and PPO).

The "VLA" is a small module with the EmbodiChain interface (``forward``, ``evaluate_actions``, ``get_value``),
pretrained in this script by behaviour cloning of a biased swing-up controller (a constant torque bias makes it
imperfect, so there is something to gain). Arms, on the same seeds, env-step budget and 10 evaluation episodes
(env seeds 1000..1009, deterministic actions):

- ``base``: the pretrained module alone (its mean action);
- ``finetune``: stock PPO with :class:`sb3_vla.policies.VLAActorCriticPolicy`, the encoder frozen, the action head,
  log-std and value head trained;
- ``residual_sac`` / ``residual_ppo``: the same module frozen as a ``CallableBase``, a zero-initialised residual
  (``ResidualSACPolicy`` / ``ResidualActorCriticPolicy``, ``residual_scale`` 2) trained on top.

Forgetting check (``finetune``): at every evaluation, the fine-tuned model's return on the base's own evaluation
episodes (step 0 is the pretrained module itself) and its mean absolute action change on the 2000 states the base
visits in those episodes.

Run: ``nice -n 10 python benchmarks/finetune.py --seeds 3 --steps 6144`` (175 CPU-seconds measured).
``--bias 2.0 --sac-envs 1`` is a harder, costlier variant (more headroom; one SAC gradient step per env step).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# run as a script from anywhere: import the repo's packages, and drop the script's own folder from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import torch as th  # noqa: E402
from stable_baselines3 import PPO, SAC  # noqa: E402
from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions import Normal  # noqa: E402

from benchmarks._results import write_section  # noqa: E402
from sb3_vla import CallableBase, make_residual_vec_env  # noqa: E402
from sb3_vla.policies import ResidualActorCriticPolicy, ResidualSACPolicy, VLAActorCriticPolicy  # noqa: E402

ENV_ID = "Pendulum-v1"
BIAS = 1.0  # N m of constant torque error in the demonstrations
SAC_ENVS = 4  # residual SAC's envs: SB3 takes one gradient step per vectorised step, so 4 envs = 1 per 4 env steps
EVAL_SEED, EVAL_EPISODES = 1000, 10
ARMS = ("base", "finetune", "residual_sac", "residual_ppo")
EVALS = 3  # evaluations after step 0
PPO_KWARGS: dict[str, Any] = dict(n_steps=128, batch_size=128, n_epochs=10, learning_rate=3e-4, gamma=0.98)
SAC_KWARGS: dict[str, Any] = dict(learning_rate=1e-3, learning_starts=300, batch_size=256)


def biased_controller(obs: np.ndarray, bias: float) -> np.ndarray:
    """Energy-shaping swing-up + PD balance for a batch of Pendulum-v1 observations ``(B, 3)``, plus a torque bias;
    returns ``(B, 1)`` in [-2, 2]."""
    c, s, w = obs[:, 0], obs[:, 1], obs[:, 2]
    balance = -(10.0 * np.arctan2(s, c) + 2.0 * w)
    energy = 0.5 * w * w + 15.0 * c  # dE/dt = 3 u w: pump towards the upright energy 15
    swing = np.clip(0.5 * (15.0 - energy), -2, 2) * np.where(np.abs(w) > 1e-3, np.sign(w), 1.0)
    return np.clip(np.where(c > 0.85, balance, swing) + bias, -2.0, 2.0)[:, None].astype(np.float32)


class PendulumVLA(nn.Module):
    """A small module with the EmbodiChain VLA interface: encoder -> Gaussian action head, value MLP on the
    encoder's features. ``forward`` samples unless ``deterministic``."""

    def __init__(self, hidden: int = 64, log_std_init: float = -1.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 1)
        self.log_std = nn.Parameter(th.full((1,), log_std_init))
        self.critic = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def mean(self, obs: th.Tensor) -> th.Tensor:
        return self.head(self.encoder(obs))

    def _dist(self, observations: dict[str, th.Tensor]) -> Normal:
        return Normal(self.mean(observations["obs"]), self.log_std.exp())

    def forward(self, observations: dict[str, th.Tensor], deterministic: bool = False) -> th.Tensor:
        dist = self._dist(observations)
        return dist.mean if deterministic else dist.sample()

    def evaluate_actions(self, observations: dict[str, th.Tensor], actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        dist = self._dist(observations)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def get_value(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return self.critic(self.encoder(observations["obs"]))


def demonstrations(bias: float, n_envs: int = 16, steps: int = 600, seed: int = 0) -> np.ndarray:
    """States visited by the biased controller with exploration noise (std 0.5 N m), plus uniform random states."""
    rng = np.random.default_rng(seed)
    venv = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    obs = np.asarray(venv.reset())
    states = [obs]
    for _ in range(steps):
        action = np.clip(biased_controller(obs, bias) + rng.normal(0, 0.5, (n_envs, 1)), -2, 2)
        obs = np.asarray(venv.step(action)[0])
        states.append(obs)
    venv.close()
    angle = rng.uniform(-np.pi, np.pi, 4000)
    uniform = np.stack([np.cos(angle), np.sin(angle), rng.uniform(-8, 8, 4000)], 1)
    return np.concatenate([np.concatenate(states), uniform]).astype(np.float32)


def pretrain(path: Path, bias: float, iters: int = 3000, seed: int = 0) -> tuple[PendulumVLA, float]:
    """Behaviour-clone the biased controller's mean action (MSE); save ``{"model_state_dict": ...}`` to ``path``."""
    th.manual_seed(seed)
    states = th.as_tensor(demonstrations(bias, seed=seed))
    labels = th.as_tensor(biased_controller(states.numpy(), bias))
    module = PendulumVLA()
    opt = th.optim.Adam([p for n, p in module.named_parameters() if not n.startswith("critic")], lr=1e-3)
    gen = th.Generator().manual_seed(seed)
    for _ in range(iters):
        idx = th.randint(0, len(states), (256,), generator=gen)
        loss = ((module.mean(states[idx]) - labels[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with th.no_grad():
        mse = float(((module.mean(states) - labels) ** 2).mean())
    th.save({"model_state_dict": module.state_dict()}, path)
    return module.eval(), mse


def module_action(module: PendulumVLA) -> Callable[[np.ndarray], np.ndarray]:
    def act(obs: np.ndarray) -> np.ndarray:
        with th.no_grad():
            return module.mean(th.as_tensor(obs, dtype=th.float32)).clamp(-2, 2).numpy()

    return act


def rollout_eval(act: Callable[[Any], np.ndarray], venv: VecEnv) -> tuple[float, np.ndarray]:
    """Mean return of the ``EVAL_EPISODES`` fixed episodes (Pendulum episodes all last 200 steps) and the raw
    observations visited (for a plain Box env)."""
    obs = venv.reset()
    total = np.zeros(venv.num_envs)
    visited = []
    for _ in range(200):
        visited.append(obs["obs"] if isinstance(obs, dict) else obs)
        obs, reward, _, _ = venv.step(act(obs))
        total += reward
    venv.close()
    return float(total.mean()), np.concatenate(visited)


def plain_eval_env() -> VecEnv:
    return make_vec_env(ENV_ID, n_envs=EVAL_EPISODES, seed=EVAL_SEED)


def residual_env(base: CallableBase, n_envs: int, seed: int) -> VecEnv:
    return make_residual_vec_env(ENV_ID, base=base, n_envs=n_envs, residual_scale=2.0, seed=seed)


def run_arm(
    arm: str, seed: int, steps: int, ckpt: Path, base: CallableBase, base_states: np.ndarray, sac_envs: int = SAC_ENVS
) -> list[dict]:
    base_act = module_action_from_ckpt(ckpt)
    if arm == "finetune":
        env = make_vec_env(ENV_ID, n_envs=4, seed=seed)
        kwargs = dict(model_class=PendulumVLA, model_path=str(ckpt), freeze=["encoder"])
        model: BaseAlgorithm = PPO(VLAActorCriticPolicy, env, seed=seed, policy_kwargs=kwargs, **PPO_KWARGS)
        ref = base_act(base_states)

        def evaluate(m: BaseAlgorithm) -> dict[str, float]:
            ret, _ = rollout_eval(lambda o: m.predict(o, deterministic=True)[0], plain_eval_env())
            drift = np.abs(np.clip(m.predict(base_states, deterministic=True)[0], -2, 2) - ref).mean()
            return {"return": ret, "drift": float(drift)}
    else:
        env = residual_env(base, sac_envs if arm == "residual_sac" else 4, seed)
        if arm == "residual_sac":
            model = SAC(ResidualSACPolicy, env, seed=seed, policy_kwargs=dict(net_arch=[64, 64]), **SAC_KWARGS)
        else:
            model = PPO(ResidualActorCriticPolicy, env, seed=seed, **PPO_KWARGS)

        def evaluate(m: BaseAlgorithm) -> dict[str, float]:
            ret, _ = rollout_eval(lambda o: m.predict(o, deterministic=True)[0], residual_env(base, 10, EVAL_SEED))
            return {"return": ret}

    # evaluate between learn() calls, so that PPO's last update counts; chunks are whole PPO rollouts
    rollout = PPO_KWARGS["n_steps"] * 4
    chunk = max(rollout, steps // EVALS // rollout * rollout)
    rows = [{"step": 0.0, **evaluate(model)}]
    while model.num_timesteps < steps:
        model.learn(chunk, reset_num_timesteps=False)
        rows.append({"step": float(model.num_timesteps), **evaluate(model)})
    env.close()
    return rows


def module_action_from_ckpt(ckpt: Path) -> Callable[[np.ndarray], np.ndarray]:
    module = PendulumVLA()
    module.load_state_dict(th.load(ckpt, weights_only=True)["model_state_dict"])
    return module_action(module.eval())


def summarise(results: dict[str, list[list[dict]]], base_return: float) -> list[str]:
    lines = [
        "| arm | return at step 0 | final return | best | largest dip below step 0 | seeds |",
        "|---|---|---|---|---|---|",
        f"| base (pretrained module, frozen) | {base_return:.0f} | {base_return:.0f} | - | - | - |",
    ]
    for arm, runs in results.items():
        start = np.array([r[0]["return"] for r in runs])
        final = np.array([r[-1]["return"] for r in runs])
        best = np.array([max(x["return"] for x in r) for r in runs])
        dip = np.array([min(0.0, min(x["return"] for x in r) - r[0]["return"]) for r in runs])
        per_seed = ", ".join(f"{f:.0f}" for f in final)
        lines.append(
            f"| {arm} | {start.mean():.0f} | {final.mean():.0f} +- {final.std():.0f} | {best.mean():.0f} | "
            f"{dip.mean():.0f} (worst {dip.min():.0f}) | {per_seed} |"
        )
    return lines


def forgetting(runs: list[list[dict]]) -> list[str]:
    lines = [
        "| step | return on the base's episodes (mean) | per seed | mean abs action change on the base's states, N m |",
        "|---|---|---|---|",
    ]
    for i, row in enumerate(runs[0]):
        rets = ", ".join(f"{r[i]['return']:.0f}" for r in runs)
        mean = np.mean([r[i]["return"] for r in runs])
        drift = np.mean([r[i]["drift"] for r in runs])
        lines.append(f"| {int(row['step'])} | {mean:.0f} | {rets} | {drift:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6144, help="env steps per (arm, seed)")
    p.add_argument("--arms", nargs="+", default=[a for a in ARMS if a != "base"], choices=ARMS[1:])
    p.add_argument("--bias", type=float, default=BIAS, help="the demonstrator's torque bias, N m")
    p.add_argument("--sac-envs", type=int, default=SAC_ENVS, help="envs of the residual SAC arm (PPO arms use 4)")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)
    th.set_num_threads(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "pendulum_vla.pt"
        module, mse = pretrain(ckpt, args.bias)
        act = module_action(module)
        space = gym.make(ENV_ID).action_space
        assert isinstance(space, gym.spaces.Box)
        base = CallableBase(lambda o: act(o["obs"]), space, batched=True, name="pendulum_vla")
        base_return, base_states = rollout_eval(act, plain_eval_env())
        teacher_return, _ = rollout_eval(lambda o: biased_controller(o, args.bias), plain_eval_env())
        print(f"pretrained by BC (MSE {mse:.4f}): return {base_return:.0f}; biased teacher {teacher_return:.0f}")
        results: dict[str, list[list[dict]]] = {}
        for arm in args.arms:
            for seed in range(args.seeds):
                ts = time.time()
                rows = run_arm(arm, seed, args.steps, ckpt, base, base_states, args.sac_envs)
                results.setdefault(arm, []).append(rows)
                curve = ", ".join(f"{int(r['step'])}: {r['return']:.0f}" for r in rows)
                print(f"{arm} seed {seed} ({time.time() - ts:.0f} s): {curve}")
    table = summarise(results, base_return)
    body = [
        "## Strategy 4: fine-tuning the head (benchmarks/finetune.py)",
        "",
        f"Pendulum-v1 (mean return of 10 fixed episodes, env seeds {EVAL_SEED}..{EVAL_SEED + EVAL_EPISODES - 1}, "
        f"deterministic actions; higher is better, an unbiased swing-up controller gets about -130). The base is a "
        f"2x64 tanh MLP pretrained here by behaviour cloning of a swing-up controller with a +{args.bias} N m "
        f"torque bias "
        f"(BC MSE {mse:.4f}; teacher {teacher_return:.0f}). {args.seeds} seeds x {args.steps} env steps per arm. "
        f"`finetune`: stock PPO with `VLAActorCriticPolicy`, encoder frozen, head + log-std + value MLP "
        f"trained ({PPO_KWARGS}, 4 envs). `residual_*`: the module frozen as a `CallableBase`, zero-initialised "
        f"residual, residual_scale 2 (SAC {SAC_KWARGS}, net [64, 64], {args.sac_envs} env(s); PPO as `finetune`).",
        "",
        *table,
    ]
    if "finetune" in results:
        body += ["", "Forgetting check, `finetune` (step 0 is the pretrained module itself):", ""]
        body += forgetting(results["finetune"])
    flags = f"--seeds {args.seeds} --steps {args.steps}"
    flags += f" --bias {args.bias}" * (args.bias != BIAS) + f" --sac-envs {args.sac_envs}" * (args.sac_envs != SAC_ENVS)
    body += ["", f"Command: `nice -n 10 python benchmarks/finetune.py {flags}` ({time.time() - t0:.0f} s wall)."]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("finetune", text)


if __name__ == "__main__":
    main()
