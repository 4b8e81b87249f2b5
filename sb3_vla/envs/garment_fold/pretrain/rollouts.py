"""GarmentFold rollouts for pretraining: scripted demonstrations, closed-loop evaluation and DAgger episodes.

Each function runs one seeded episode in a worker process (env and model cached per process) and writes or
returns its result; :func:`run_jobs` fans a list of episodes out to spawned subprocesses.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch as th

from sb3_vla.models.small_vla import GARMENT_FOLD_INSTRUCTIONS, JOINT_DIMS, SmallVLA, load_small_vla

#: seed offsets: demos use ``seed * SEED_STRIDE + i``, evaluation ``seed * SEED_STRIDE + EVAL_OFFSET + i``
SEED_STRIDE = 100_000
EVAL_OFFSET = 50_000
#: DAgger round r rolls out seeds ``seed * SEED_STRIDE + DAGGER_OFFSET + 1000 * r + i``
DAGGER_OFFSET = 20_000
#: the model after each DAgger round (and the BC model) is validated on ``seed * SEED_STRIDE + VAL_OFFSET + i``
VAL_OFFSET = 60_000
DART_RHO = 0.8  # autocorrelation of the demo action noise per step
STATE_KEYS = ("joint_pos", "joint_vel", "held", "stage", "keypoints")

_WORKER: dict[tuple[Any, ...], Any] = {}


def make_env(env_id: str, noise: float, image_size: int = 128, max_episode_steps: int | None = None) -> Any:
    """The env with the RGB observation (GarmentFold-v0 kwargs: ``rgb_obs``, ``image_size``, ``scripted_noise``)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    from sb3_vla.envs import register_envs

    register_envs()  # env ids other than GarmentFold-v0 may come from the suite too

    # the folder labels states other policies visited (DAgger): judge its progress from where the hands really are
    kwargs: dict[str, Any] = {
        "rgb_obs": True,
        "image_size": image_size,
        "scripted_noise": noise,
        "scripted_command_frame": False,
    }
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    return gym.make(env_id, **kwargs)


def _worker_env(env_id: str, noise: float, image_size: int, max_steps: int | None) -> Any:
    key = ("env", env_id, noise, image_size, max_steps)
    if key not in _WORKER:
        th.set_num_threads(1)
        _WORKER[key] = make_env(env_id, noise, image_size, max_steps)
    return _WORKER[key]


def _worker_model(weights: str, exec_horizon: int | None = None) -> SmallVLA:
    """The SmallVLA at ``weights`` (reloaded when the file changes), cached per worker process."""
    key = ("model", weights, os.path.getmtime(weights), exec_horizon)
    if key not in _WORKER:
        overrides = {} if exec_horizon is None else {"exec_horizon": exec_horizon}
        _WORKER[key] = load_small_vla(weights, **overrides).eval()
    return _WORKER[key]


def _query_chunk(model: SmallVLA, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
    """The model's action chunk ``(exec_horizon, 61)`` for one observation."""
    batch: dict[str, Any] = {k: th.as_tensor(obs[k][None]) for k in ("rgb", *model.state_keys)}
    batch[model.instruction_key] = [info["instruction"]]
    with th.inference_mode():
        return model(batch)[0].numpy()


def _record_obs(rec: dict[str, list[Any]], obs: dict[str, Any], info: dict[str, Any]) -> None:
    rec["rgb"].append(obs["rgb"])
    for k in STATE_KEYS:
        rec[k].append(obs[k])
    rec["instruction"].append(GARMENT_FOLD_INSTRUCTIONS.index(info["instruction"]))


def _save_episode(path: str, rec: dict[str, list[Any]], **scalars: Any) -> dict[str, np.ndarray]:
    """Stack ``rec`` and write it with ``scalars`` to ``path`` (npz) atomically; return the arrays."""
    arrays = {k: np.stack(v) for k, v in rec.items()}
    arrays.update({k: np.array(v) for k, v in scalars.items()})
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return arrays


def collect_episode(
    env_id: str,
    seed: int,
    noise: float,
    path: str,
    image_size: int = 128,
    max_steps: int | None = None,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Run one scripted episode and save it as ``path`` (npz: rgb, state keys, instruction ids, actions).

    With ``action_noise`` > 0 the executed joint targets get Gaussian noise (normalised units) while the recorded
    label stays the scripted action (DART): the closed-loop folder shows how to recover from the states a
    slightly-off policy visits.
    """
    env = _worker_env(env_id, noise, image_size, max_steps)
    obs, info = env.reset(seed=seed)
    act_rng = np.random.default_rng(seed + 7919)
    drift = np.zeros(JOINT_DIMS)
    rec: dict[str, list[Any]] = {k: [] for k in ("rgb", *STATE_KEYS, "instruction", "action")}
    ret, success, done = 0.0, False, False
    while not done:
        action = np.asarray(env.unwrapped.scripted_action(), dtype=np.float32)
        _record_obs(rec, obs, info)
        rec["action"].append(action)
        executed = action.copy()
        if action_noise > 0:  # AR(1) noise (stationary std action_noise): slow drifts, not just jitter
            drift = DART_RHO * drift + math.sqrt(1 - DART_RHO**2) * act_rng.normal(0.0, action_noise, JOINT_DIMS)
            executed[:JOINT_DIMS] += drift.astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(executed)
        ret += float(reward)
        success = success or bool(info.get("is_success", False))
        done = terminated or truncated
    _save_episode(path, rec, success=success, ret=ret)
    return {"seed": seed, "success": success, "steps": len(rec["action"]), "return": ret}


def evaluate_episode(
    env_id: str,
    seed: int,
    weights: str,
    image_size: int = 128,
    max_steps: int | None = None,
    exec_horizon: int | None = None,
) -> dict[str, Any]:
    """Run the model closed loop for one seeded episode (executing ``exec_horizon`` actions per query)."""
    env = _worker_env(env_id, 0.0, image_size, max_steps)
    model = _worker_model(weights, exec_horizon)
    obs, info = env.reset(seed=seed)
    ret, steps, success, done = 0.0, 0, False, False
    stages = 0
    while not done:
        for action in _query_chunk(model, obs, info):
            obs, reward, terminated, truncated, info = env.step(action)
            ret += float(reward)
            steps += 1
            success = success or bool(info.get("is_success", False))
            stages = max(stages, int(np.sum(info.get("stage_complete", 0))))
            done = terminated or truncated
            if done:
                break
    return {"seed": seed, "success": success, "steps": steps, "return": ret, "stages_complete": stages}


def dagger_episode(
    env_id: str,
    seed: int,
    weights: str,
    path: str,
    noise: float,
    beta: float,
    image_size: int = 128,
    max_steps: int | None = None,
    sync: bool = True,
) -> dict[str, Any]:
    """Roll out the model at ``weights`` closed loop and save the scripted folder's label of every visited state.

    Each step executes the model's action (its chunk re-queried every ``exec_horizon`` steps) or, with
    probability ``beta``, the folder's action (a DAgger mixture policy); the recorded ``action`` is always the
    folder's (``env.unwrapped.scripted_action()``, perception noise ``noise`` m), queried at every step so its
    state machine follows the visited states: its phase transitions read the simulator (hand positions, which hand
    holds the cloth), not the commands it issued, and with ``sync`` :meth:`ScriptedFolder.follow` moves its phase on to
    what the executed actions already achieved. Saved like a demonstration (npz at ``path``) plus ``executed``
    (the actions run) and ``expert_executed`` (per step, whether the folder's action was run).
    """
    env = _worker_env(env_id, noise, image_size, max_steps)
    model = _worker_model(weights)
    obs, info = env.reset(seed=seed)
    mix_rng = np.random.default_rng(seed + 104729)
    rec: dict[str, list[Any]] = {k: [] for k in ("rgb", *STATE_KEYS, "instruction", "action", "executed")}
    rec["expert_executed"] = []
    chunk: list[np.ndarray] = []
    ret, success, done, stages = 0.0, False, False, 0
    while not done:
        if sync:
            env.unwrapped.folder.follow(info.get("stage_complete"))
        label = np.asarray(env.unwrapped.scripted_action(), dtype=np.float32)
        if not chunk:
            chunk = list(_query_chunk(model, obs, info))
        learner = chunk.pop(0)
        expert = bool(beta > 0 and mix_rng.random() < beta)
        executed = label if expert else learner.astype(np.float32)
        _record_obs(rec, obs, info)
        rec["action"].append(label)
        rec["executed"].append(executed)
        rec["expert_executed"].append(expert)
        obs, reward, terminated, truncated, info = env.step(executed)
        ret += float(reward)
        success = success or bool(info.get("is_success", False))
        stages = max(stages, int(np.sum(info.get("stage_complete", 0))))
        done = terminated or truncated
    arrays = _save_episode(path, rec, success=success, ret=ret, beta=beta)
    n_expert = int(arrays["expert_executed"].sum())
    return {
        "seed": seed,
        "success": success,
        "steps": len(rec["action"]),
        "return": ret,
        "stages_complete": stages,
        "expert_steps": n_expert,
    }


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def run_jobs(fn: Any, jobs: list[tuple[Any, ...]], workers: int, log: Any) -> list[dict[str, Any]]:
    """``[fn(*job) for job in jobs]``, in ``workers`` spawned subprocesses when ``workers > 1``; logs each result."""
    if not jobs:
        return []
    results = []
    if workers <= 1:
        for i, job in enumerate(jobs):
            results.append(fn(*job))
            log(f"  {i + 1}/{len(jobs)}: {results[-1]}")
        return results
    with _pool(workers) as pool:
        for i, r in enumerate(pool.map(fn, *zip(*jobs))):
            results.append(r)
            log(f"  {i + 1}/{len(jobs)}: {r}")
    return results
