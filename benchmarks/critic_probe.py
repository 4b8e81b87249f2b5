"""What a residual SAC (or TQC) checkpoint of ``benchmarks/learning.py`` does, and what its critic believes.

Loads the last checkpoint of a ``(residual, seed)`` run, rolls out its deterministic policy on the run's evaluation
episodes, and prints the episodes' returns (successes and failures apart: a residual that raises the return but
not the success rate has found a gap in the reward), per residual dim the mean |residual| (in units of its bound),
its mean (a steady bias) and the share of decisions beyond 0.9 of the bound; then the critic's view: its value of
each episode's first decision against the discounted return that followed (over-estimation), and
``Q(s, pi(s)) - Q(s, 0)`` over the visited states (the minimum over the Q-networks, as SAC's actor reads it).
On GarmentFold-v0 with the scripted folder it also compares the policy with the oracle pinch correction of
``benchmarks/garment_headroom.py`` (the correction that cancels the folder's perception error): their correlation
per x/y dim, ``Q(s, oracle) - Q(s, 0)``, and per folder phase the critic along the line to the oracle,
``Q(s, f * oracle) - Q(s, 0)`` for ``f`` in :data:`ORACLE_LINE`; and the actor's pre-tanh std per dim (how far
its exploration reaches). With relative pinch residuals (``PinchResidualMap(relative=True)``) the reference is the
observation rule ``relative_rule`` instead of the oracle (with ``held_key``, its constant form).

Run with the flags the learning run used (they rebuild its env and model), e.g.::

    python benchmarks/critic_probe.py --env GarmentFold-v0 --tag recipe_utd4 --hyperparams gradient_steps:4

Prints only (the readings go into the learning run's RESULTS.md note).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import learning  # noqa: E402 - after the path fix

#: the fractions of the oracle correction at which the critic is read (is the correction's direction valued?)
ORACLE_LINE = (0.25, 0.5, 1.0)


def _oracle(raw: Any, scale: np.ndarray) -> np.ndarray:
    """The oracle pinch correction as a residual in [-1, 1] (x/y of each active hand; z and advance 0)."""
    from sb3_vla.envs.garment_fold.oracle import oracle_offsets
    from sb3_vla.envs.garment_fold.scripted import SIDES

    out = np.zeros(7, np.float32)
    offsets = oracle_offsets(raw)
    for i, side in enumerate(SIDES):
        if side in offsets:
            out[3 * i : 3 * i + 2] = np.clip(np.asarray(offsets[side]) / scale[3 * i : 3 * i + 2], -1.0, 1.0)
    return out


def _rule(obs: dict[str, np.ndarray], scale: np.ndarray) -> np.ndarray:
    """The relative map's reference correction, a rule of the observation (``relative_rule``), in [-1, 1]; for the
    7-D held-phased map (``held_key``) the same rule, a constant fraction on the xy dims (on every dim of its 4-D
    xy-only form, ``dims=(0, 1, 3, 4)``)."""
    from sb3_vla.envs.garment_fold.oracle import RELATIVE_RULE_FRACTION, relative_rule

    if scale.shape == (7,):
        rule = np.zeros(7)
        rule[[0, 1, 3, 4]] = RELATIVE_RULE_FRACTION
        return np.clip(rule / scale, -1.0, 1.0).astype(np.float32)
    if scale.shape == (4,):
        return np.clip(RELATIVE_RULE_FRACTION / scale, -1.0, 1.0).astype(np.float32)
    return np.clip(relative_rule(obs["held"][0]) / scale, -1.0, 1.0).astype(np.float32)


def _pre_tanh_std(actor: Any, obs: Any) -> np.ndarray:
    """The actor's pre-tanh action std at one state: ``exp(log_std)``, or with gSDE the std of ``latent @ noise``
    (the noise matrix is drawn per rollout, so this is the spread across rollouts at this state)."""
    import torch as th

    _, log_std, extra = actor.get_action_dist_params(obs)
    if getattr(actor, "use_sde", False):
        std = actor.action_dist.get_std(log_std)  # (latent, action dims)
        return th.sqrt(th.mm(extra["latent_sde"] ** 2, std**2))[0].detach().numpy()
    return th.exp(log_std)[0].detach().numpy()


def probe(
    setup: learning.EnvSetup, checkpoint_dir: Path, seed: int, episodes: int, algo: str = "sac"
) -> dict[str, Any]:
    """Roll out the checkpoint's deterministic policy; return its residuals, the critic's margins and (GarmentFold
    with the scripted base) the oracle's residuals and margins. ``algo``: ``sac`` (the value is the minimum over
    the Q-networks) or ``tqc`` (the mean of the quantiles TQC keeps, its top ones per net dropped)."""
    import torch as th

    th.set_num_threads(1)
    env = learning._make_env(setup, "residual", 1, 10_000 + 100 * seed, "dummy")
    model = learning._make_model(setup, "residual", algo, env, seed)
    steps = learning.resume_pair(model, checkpoint_dir, setup.decision_interval)
    if steps <= 0:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}: run benchmarks/learning.py with these flags first")
    inner = env
    while not hasattr(inner, "envs"):
        inner = inner.venv
    raw = inner.envs[0].unwrapped
    with_oracle = setup.env_id == "GarmentFold-v0" and setup.base == "scripted"
    # relative pinch residuals: the reference is the observation rule that folds 18/20 (garment_headroom)
    spec = setup.residual_map if isinstance(setup.residual_map, dict) else {}
    relative = with_oracle and any(isinstance(v, dict) and v.get("relative") for v in spec.values())
    scale = np.broadcast_to(np.asarray(setup.residual_scale, dtype=np.float64), env.action_space.shape)

    def q(obs_t: Any, action: np.ndarray) -> float:
        with th.no_grad():
            values = model.critic(obs_t, th.as_tensor(action[None], dtype=th.float32))
            if algo == "tqc":  # (1, nets, quantiles): sort all, drop the top ones, as TQC's target does
                kept = values.shape[1] * (values.shape[2] - model.top_quantiles_to_drop_per_net)
                return float(th.sort(values.reshape(-1))[0][:kept].mean())
            return float(th.min(th.cat(values, dim=1)))

    residuals, oracles, margins, oracle_margins, first_q, stds = [], [], [], [], [], []
    line: dict[str, list[list[float]]] = {}  # folder phase -> Q(s, f * oracle) - Q(s, 0) for f in ORACLE_LINE
    env.seed(10_000 + 100 * seed)
    obs = env.reset()
    successes: list[bool] = []
    returns: list[tuple[float, float]] = []  # per episode: the return, and discounted by the run's gamma per decision
    success, ret, disc, t = False, 0.0, 0.0, 0
    gamma = float(setup.sac_kwargs.get("gamma", 0.99))
    while len(successes) < episodes:
        action = model.predict(obs, deterministic=True)[0]
        obs_t = model.policy.obs_to_tensor(obs)[0]
        zero = np.zeros(action.shape[1], np.float32)
        residuals.append(action[0].copy())
        with th.no_grad():  # the actor's exploration width (pre-tanh std) at this state
            stds.append(_pre_tanh_std(model.actor, obs_t))
        q_pi = q(obs_t, action[0])
        margins.append(q_pi - q(obs_t, zero))
        if t == 0:
            first_q.append(q_pi)
        if with_oracle:
            oracle = _rule(obs, np.asarray(scale)) if relative else _oracle(raw, np.asarray(scale))
            oracles.append(oracle)
            oracle_margins.append(q(obs_t, oracle) - q(obs_t, zero))
            if np.any(oracle):
                from sb3_vla.envs.garment_fold.scripted import PHASE_NAMES

                phase = PHASE_NAMES[raw.folder.phase]
                line.setdefault(phase, []).append([q(obs_t, f * oracle) - q(obs_t, zero) for f in ORACLE_LINE])
        obs, rewards, dones, infos = env.step(action)
        success |= bool(infos[0].get("is_success", False))
        ret, disc, t = ret + float(rewards[0]), disc + gamma**t * float(rewards[0]), t + 1
        if dones[0]:
            successes.append(success)
            returns.append((ret, disc))
            success, ret, disc, t = False, 0.0, 0.0, 0
    env.close()
    return dict(
        env_steps=steps,
        success=float(np.mean(successes)),
        successes=np.array(successes),
        returns=np.array(returns),
        first_q=np.array(first_q),
        residual=np.stack(residuals),
        margin=np.array(margins),
        oracle=np.stack(oracles) if oracles else None,
        oracle_margin=np.array(oracle_margins) if oracles else None,
        oracle_line={k: np.array(v) for k, v in line.items()},
        std=np.stack(stds),
    )


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.2f}" for v in values) + "]"


def _returns_line(successes: np.ndarray, returns: np.ndarray) -> str:
    parts = []
    for name, mask in (("successes", successes), ("failures", ~successes)):
        if mask.any():
            ret, disc = returns[mask].mean(0)
            parts.append(f"{name} {ret:+.2f} (discounted {disc:+.2f})")
    return "mean episode return: " + ", ".join(parts)


def report(result: dict[str, Any], episodes: int) -> str:
    """The readings of :func:`probe` as text."""
    r = result["residual"]
    lines = [
        f"checkpoint at {result['env_steps']} env steps; {episodes} deterministic episodes, {len(r)} decisions, "
        f"success {100 * result['success']:.0f}%",
        _returns_line(result["successes"], result["returns"]),
        f"mean |residual| per dim (of its bound): {_fmt(np.abs(r).mean(0))}",
        f"mean residual per dim: {_fmt(r.mean(0))}",
        f"share beyond 0.9 of the bound: {_fmt((np.abs(r) > 0.9).mean(0))}",
        f"actor's pre-tanh std per dim (its exploration width): {_fmt(result['std'].mean(0))}",
        f"critic at each episode's first decision: Q(s0, pi) {result['first_q'].mean():+.2f} against the discounted "
        f"return that followed {result['returns'][:, 1].mean():+.2f} (mean over episodes)",
        f"Q(s, pi) - Q(s, 0): mean {result['margin'].mean():+.3f}, > 0 on {100 * (result['margin'] > 0).mean():.0f}% "
        "of states",
    ]
    if result["oracle"] is not None:
        o = result["oracle"]
        # the fraction dims of the relative map: 11-D, 7-D held-phased, or its 4-D xy-only form
        dims = {11: [0, 1, 2, 3, 5, 6, 7, 8], 4: [0, 1, 2, 3]}.get(o.shape[1], [0, 1, 3, 4])
        moving = np.abs(o[:, dims]).sum(1) > 0
        for d in dims:
            a, b = r[moving, d], o[moving, d]
            if np.ptp(b) < 1e-6:  # a constant reference (the held-phased rule): compare the means
                lines.append(f"dim {d}: mean residual {a.mean():+.2f} against the rule's {b.mean():+.2f}")
                continue
            corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 else float("nan")
            lines.append(f"dim {d}: correlation with the oracle over {int(moving.sum())} decisions = {corr:+.2f}")
        m = result["oracle_margin"][moving]
        lines.append(
            f"Q(s, oracle) - Q(s, 0) where the oracle moves: mean {m.mean():+.3f}, > 0 on {100 * (m > 0).mean():.0f}%"
        )
        for phase, values in result["oracle_line"].items():
            steps = ", ".join(f"{f:g}: {v:+.2f}" for f, v in zip(ORACLE_LINE, values.mean(0), strict=True))
            lines.append(f"Q(s, f x oracle) - Q(s, 0) in {phase} ({len(values)} decisions), f = {steps}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", required=True)
    p.add_argument("--algo", default="sac", choices=["sac", "tqc"])
    p.add_argument("--tag", default="", help="the learning run's --tag")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--recipe", nargs="*", default=[])
    p.add_argument("--hyperparams", nargs="*", default=[])
    p.add_argument("--residual-scale", default=None)
    p.add_argument("--residual-map", default=None)
    p.add_argument("--base", default=None)
    p.add_argument("--env-kwargs", nargs="*", default=[])
    p.add_argument("--ignore-keys", nargs="*", default=[])
    p.add_argument("--policy-kwargs", nargs="*", default=[])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    import sb3_vla  # noqa: F401 - registers the envs

    setup = learning.make_setup(
        args.env,
        args.algo,
        hyperparams=args.hyperparams,
        residual_map=args.residual_map,
        residual_scale=args.residual_scale,
        recipe=args.recipe,
        base=args.base,
        env_kwargs=args.env_kwargs,
        ignore_keys=args.ignore_keys,
        policy_kwargs=args.policy_kwargs,
    )
    csv_path = args.out / f"{learning.run_stem(args.env, args.algo, args.tag)}.csv"
    checkpoint_dir = learning.pair_checkpoint_dir(csv_path, "residual", args.seed)
    result = probe(setup, checkpoint_dir, args.seed, args.episodes, args.algo)
    text = report(result, args.episodes)
    print(text)
    return text


if __name__ == "__main__":
    main()
