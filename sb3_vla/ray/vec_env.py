"""``RayVecEnv``: a Stable-Baselines3 ``VecEnv`` whose envs live in Ray actors, on one machine or many.

It follows ``SubprocVecEnv`` call for call (``stable_baselines3/common/vec_env/subproc_vec_env.py``): the same
auto-reset with ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``, ``reset_infos``, seeds and
options used once per ``reset()``, ``env_method`` / ``get_attr`` / ``set_attr`` / ``env_is_wrapped``, ``render``.
What differs: a worker may sit on another node of the cluster, and a dead worker or one that stops answering
raises :class:`~sb3_vla.ray.RayWorkerError` naming the env index instead of hanging. Once the actors have started,
their calls (``step``, ``reset``, ``env_method`` ...) go over a direct, authenticated connection to each actor
(:mod:`sb3_vla.ray.channel`), which costs about what ``SubprocVecEnv``'s pipes cost, a fraction of a Ray call.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_vla.ray._common import RayWorkerError, cluster_resources, ensure_ray, import_ray
from sb3_vla.ray.channel import Channel, ChannelClosed, ChannelServer, ChannelTimeout


def _stack_obs(obs_list: Sequence[Any], space: spaces.Space) -> VecEnvObs:
    """Stack per-env observations along a new first axis (per key for Dict, per entry for Tuple spaces)."""
    if isinstance(space, spaces.Dict):
        return {key: np.stack([o[key] for o in obs_list]) for key in space.spaces}
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([o[i] for o in obs_list]) for i in range(len(space.spaces)))
    return np.stack(obs_list)


def _writable(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _writable(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_writable(v) for v in obs)
    if isinstance(obs, np.ndarray) and not obs.flags.writeable:
        return obs.copy()
    return obs


# the worker calls that go over the direct channel once it is open (start-up, close and node() stay Ray calls)
CHANNEL_METHODS = frozenset(
    {"step", "reset", "render", "env_method", "get_attr", "has_attr", "set_attr", "is_wrapped", "get_spaces"}
)


def _died(index: int, what: str, error: BaseException) -> str:
    return (
        f"RayVecEnv: the worker of env index {index} died during {what} ({type(error).__name__}); the env (or its "
        "node) crashed or was killed. Close this VecEnv and build a new one"
    )


class EnvWorker:
    """The body of one env actor: it owns one env and answers the calls ``SubprocVecEnv``'s worker answers."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        env = env_fn()
        if not isinstance(env, gym.Env):
            raise TypeError(f"RayVecEnv env factories must return a gymnasium.Env, got {type(env).__name__}")
        self.env = env

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, dict[str, Any], dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict[str, Any] = {}
        if done:  # keep the last observation where SB3 looks for it, then start the next episode
            info["terminal_observation"] = observation
            observation, reset_info = self.env.reset()
        return observation, float(reward), bool(done), info, reset_info

    def reset(self, seed: int | None, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        maybe_options = {"options": options} if options else {}
        return self.env.reset(seed=seed, **maybe_options)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def get_spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def env_method(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
            return True
        except AttributeError:
            return False

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)  # on the outermost wrapper, as SubprocVecEnv's worker does

    def is_wrapped(self, wrapper_class: type[gym.Wrapper]) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def node(self) -> str:
        """The IP address of the node this worker runs on."""
        import ray

        return str(ray.util.get_node_ip_address())

    def open_channel(self, authkey: bytes) -> tuple[str, int]:
        """Listen for the driver's direct connection (its env calls) on this node; return its address."""
        return ChannelServer(self._answer).open(authkey, self.node())

    def _answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if method not in CHANNEL_METHODS:
            raise ValueError(f"the direct channel does not answer {method!r}; it answers {sorted(CHANNEL_METHODS)}")
        return getattr(self, method)(*args)


class RayVecEnv(VecEnv):
    """Run each env in its own Ray actor; a drop-in for ``SubprocVecEnv`` that scales across machines.

    Joins the cluster at ``address`` (or ``RAY_ADDRESS``) or the one this process is already connected to;
    without either it starts a local cluster (``ray.init(num_cpus=...)``). Each actor asks the scheduler for
    ``num_cpus_per_env`` CPUs (and ``num_gpus_per_env`` GPUs), which is how envs spread over a cluster's CPU nodes.
    The package must be importable on every node (install it there, or pass a ``runtime_env`` via
    ``ray_init_kwargs``).

    :param env_fns: one env factory per env (what ``make_vec_env`` passes to its ``vec_env_cls``).
    :param address: an existing cluster, e.g. ``"auto"`` on a node of it or ``"ray://head:10001"``.
    :param num_cpus: logical CPUs of a local cluster started here (default: enough for all envs, at least the
        machine's cores, over-subscribing as ``SubprocVecEnv`` does).
    :param num_cpus_per_env: CPUs each env actor reserves.
    :param num_gpus_per_env: GPUs each env actor reserves (GPU simulators).
    :param timeout_s: seconds any call may take before :class:`~sb3_vla.ray.RayWorkerError` is raised.
    :param start_timeout_s: seconds the actors may take to start (scheduling, imports, env construction).
    :param direct_steps: send the env calls (``step``, ``reset``, ``env_method`` ...) over a direct TCP connection
        to each actor, opened through Ray and authenticated with a random key (a fraction of a Ray call's cost);
        ``False`` makes them Ray actor calls. Where the driver cannot reach a worker's port it warns and uses Ray
        calls.
    :param actor_options: more ``ray.remote`` options for the env actors (``resources``, ``runtime_env`` ...).
    :param ray_init_kwargs: keyword arguments for ``ray.init`` when this class starts or joins the cluster.

    Example::

        from stable_baselines3.common.env_util import make_vec_env
        from sb3_vla.ray import RayVecEnv

        venv = make_vec_env("Pendulum-v1", n_envs=4, vec_env_cls=RayVecEnv, vec_env_kwargs=dict(num_cpus_per_env=0.5))
        obs = venv.reset()  # (4, 3)
        venv.close()
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        address: str | None = None,
        num_cpus: float | None = None,
        num_cpus_per_env: float = 1.0,
        num_gpus_per_env: float = 0.0,
        timeout_s: float = 120.0,
        start_timeout_s: float = 600.0,
        direct_steps: bool = True,
        actor_options: dict[str, Any] | None = None,
        ray_init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not env_fns:
            raise ValueError("RayVecEnv needs at least one env factory")
        if timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError(f"timeouts must be > 0, got timeout_s={timeout_s}, start_timeout_s={start_timeout_s}")
        n = len(env_fns)
        was_connected = import_ray("RayVecEnv").is_initialized()
        if num_cpus is None and not was_connected:
            num_cpus = max(float(os.cpu_count() or 1), math.ceil(n * num_cpus_per_env))
        ray = ensure_ray(address, num_cpus, **(ray_init_kwargs or {}))
        self._ray = ray
        self.timeout_s = float(timeout_s)
        self.waiting = False
        self.closed = False
        self._check_capacity(n, num_cpus_per_env, num_gpus_per_env)
        options = {"num_cpus": num_cpus_per_env, "num_gpus": num_gpus_per_env, **(actor_options or {})}
        worker_cls = ray.remote(EnvWorker).options(**options)
        self.actors = [worker_cls.remote(env_fn) for env_fn in env_fns]
        self._step_refs: list[Any] = []
        try:
            spaces_list = self._gather([a.get_spaces.remote() for a in self.actors], "start", start_timeout_s)
        except BaseException:
            self._kill_all()
            raise
        observation_space, action_space = spaces_list[0]
        super().__init__(n, observation_space, action_space)
        self._channels: list[Channel] | None = None
        if direct_steps:
            try:
                self._channels = self._open_channels(min(start_timeout_s, 30.0))
            except BaseException:
                self._kill_all()
                raise

    def _open_channels(self, timeout: float) -> list[Channel] | None:
        authkey = os.urandom(32)
        addresses = self._gather([a.open_channel.remote(authkey) for a in self.actors], "start", timeout)
        channels: list[Channel] = []
        for i, address in enumerate(addresses):
            try:
                channels.append(Channel(tuple(address), authkey, connect_timeout_s=timeout))
            except OSError as e:
                for channel in channels:
                    channel.close()
                warnings.warn(
                    f"RayVecEnv: cannot connect to the worker of env index {i} at {address[0]}:{address[1]} ({e}); "
                    "its calls go through Ray instead (open the nodes' ports to the driver, or pass "
                    "direct_steps=False)",
                    stacklevel=4,
                )
                return None
        return channels

    def _check_capacity(self, n: int, cpus: float, gpus: float) -> None:
        total = cluster_resources(self._ray)
        for key, per in (("CPU", cpus), ("GPU", gpus)):
            if per > 0 and total and total.get(key, 0.0) < n * per:
                warnings.warn(
                    f"RayVecEnv: {n} envs x {per} {key} each need {n * per:g} {key}s but the cluster has "
                    f"{total.get(key, 0.0):g}; the actors that do not fit wait for resources (an autoscaling "
                    f"cluster may add nodes) and fail after start_timeout_s. Lower num_{key.lower()}s_per_env",
                    stacklevel=3,
                )

    # ------------------------------------------------------------------ calls with errors that name the env
    def _gather(self, refs: list[Any], what: str, timeout: float | None = None, indices: Sequence[int] = ()) -> list:
        """``ray.get`` the results of ``refs`` (one per env in ``indices``, default all) with a timeout; a dead
        actor or a timeout raises :class:`RayWorkerError` naming the env index."""
        ray = self._ray
        idx = list(indices) if indices else list(range(len(refs)))
        timeout = self.timeout_s if timeout is None else timeout
        try:
            return ray.get(refs, timeout=timeout)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            self._diagnose(refs, idx, what, timeout, e)
            raise  # pragma: no cover - _diagnose always raises

    def _diagnose(self, refs: list[Any], idx: list[int], what: str, timeout: float, error: BaseException) -> None:
        ray = self._ray
        pending = []
        for i, ref in zip(idx, refs):
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError as e:
                raise RayWorkerError(_died(i, what, e)) from e
            except ray.exceptions.RayTaskError as e:
                e.add_note(f"(raised by RayVecEnv env index {i} during {what})")
                raise
            except ray.exceptions.GetTimeoutError:
                pending.append(i)
        if pending:
            raise RayWorkerError(
                f"RayVecEnv: env index {pending} did not answer {what} within {timeout:g} s; the env hangs, or its "
                "actor cannot be scheduled (not enough CPUs/GPUs in the cluster). Raise timeout_s or "
                "start_timeout_s, or lower num_cpus_per_env"
            ) from error
        raise error

    def _call(self, method: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        ids = list(self._get_indices(indices))
        return self._call_each(method, ids, [args] * len(ids))

    def _call_each(self, method: str, ids: list[int], args: list[tuple[Any, ...]]) -> list[Any]:
        """``method(*args[k])`` on env ``ids[k]`` for every k, over the direct channels or as Ray calls."""
        if self._channels is None:
            refs = [getattr(self.actors[i], method).remote(*a) for i, a in zip(ids, args)]
            return self._gather(refs, method, indices=ids)
        self._send(method, ids, args)
        return self._receive(method, ids)

    def _send(self, method: str, ids: list[int], args: list[tuple[Any, ...]]) -> None:
        assert self._channels is not None
        for i, a in zip(ids, args):
            try:
                self._channels[i].send(method, a)
            except ChannelClosed as e:
                raise RayWorkerError(_died(i, method, e)) from e

    def _receive(self, method: str, ids: list[int]) -> list[Any]:
        """The answers of envs ``ids`` to ``method`` (all are read, so the channels stay in step after an error);
        the first error raised names its env index."""
        assert self._channels is not None
        deadline = time.monotonic() + self.timeout_s
        results: list[Any] = []
        first_error: BaseException | None = None
        for i in ids:
            try:
                results.append(self._channels[i].recv(max(0.0, deadline - time.monotonic())))
            except ChannelClosed as e:
                first_error = first_error or RayWorkerError(_died(i, method, e))
            except ChannelTimeout as e:
                first_error = first_error or self._silent(i, method, e)
            except Exception as e:  # the env's own error, re-raised here as Ray re-raises a task's
                e.add_note(f"(raised by RayVecEnv env index {i} during {method})")
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return results

    def _silent(self, index: int, method: str, error: BaseException) -> RayWorkerError:
        """The error for a channel that stopped answering: a dead actor (its node lost) if Ray says so."""
        try:
            self._ray.get(self.actors[index].node.remote(), timeout=5.0)
        except self._ray.exceptions.RayActorError as e:
            return RayWorkerError(_died(index, method, e))
        except Exception:  # pragma: no cover - busy as well
            pass
        return RayWorkerError(
            f"RayVecEnv: env index [{index}] did not answer {method} within {self.timeout_s:g} s ({error}); the env "
            "hangs. Raise timeout_s, or close this VecEnv and build a new one"
        )

    # ------------------------------------------------------------------ VecEnv API
    def step_async(self, actions: np.ndarray) -> None:
        if self._channels is None:
            self._step_refs = [a.step.remote(act) for a, act in zip(self.actors, actions)]
        else:
            self._send("step", list(range(self.num_envs)), [(act,) for act in actions])
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        if self._channels is None:
            results = self._gather(self._step_refs, "step")
        else:
            results = self._receive("step", list(range(self.num_envs)))
        self.waiting = False
        self._step_refs = []
        obs, rews, dones, infos, self.reset_infos = zip(*results)  # type: ignore[assignment]
        for info in infos:  # Ray hands out read-only arrays; SubprocVecEnv's are writable
            if "terminal_observation" in info:
                info["terminal_observation"] = _writable(info["terminal_observation"])
        return _stack_obs(obs, self.observation_space), np.stack(rews), np.stack(dones), infos  # type: ignore[return-value]

    def reset(self) -> VecEnvObs:
        ids = list(range(self.num_envs))
        results = self._call_each("reset", ids, [(self._seeds[i], self._options[i]) for i in ids])
        obs, self.reset_infos = zip(*results)  # type: ignore[assignment]
        self._reset_seeds()  # seeds and options are used once, as in SubprocVecEnv
        self._reset_options()
        return _stack_obs(obs, self.observation_space)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for channel in self._channels or []:
            channel.close()
        # a graceful env.close() where the workers answer; a dead or hung one must not keep the others alive
        with contextlib.suppress(Exception):
            self._ray.get([a.close.remote() for a in self.actors], timeout=min(self.timeout_s, 30.0))
        self._kill_all()

    def _kill_all(self) -> None:
        for actor in getattr(self, "actors", []):
            with contextlib.suppress(Exception):  # already gone
                self._ray.kill(actor)

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images.",
                stacklevel=2,
            )
            return [None for _ in self.actors]
        return self._call("render", None)

    def has_attr(self, attr_name: str) -> bool:
        return all(self._call("has_attr", None, attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._call("env_method", indices, method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._call("is_wrapped", indices, wrapper_class)

    def worker_nodes(self) -> list[str]:
        """The IP address of the node each env runs on (to check how envs spread over a cluster)."""
        return self._call("node", None)
