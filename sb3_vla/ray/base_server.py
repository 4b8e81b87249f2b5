"""One frozen base for a whole Ray cluster: a named actor that batches every caller's queries, and its client.

The server (:func:`serve_base`) builds the base once, inside a Ray actor placed on a GPU when the cluster has one,
and runs :meth:`~sb3_vla.bases.BaseModel.predict` on the requests that arrive within ``max_wait_ms`` of each other
(up to ``max_batch`` rows at once). Clients (:class:`RayServedBase`, or the ``ray:`` base spec in any observation
wrapper, in the driver or inside env workers) find it by name, so train and eval envs, env workers and Optuna
workers on one cluster share one copy of the model.

With ``prefetch=k`` the client asks for the next action chunk ``k`` steps before the current one runs out, from
the observation of that step, so the base's latency overlaps ``k`` env steps; the first action of each new chunk
is then ``k`` steps stale (its observation is ``k`` steps old).

This module sits in the base-model layer: it imports :mod:`sb3_vla.bases` and nothing above it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vla.bases.backends._common import batch_size
from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.bases.registry import make_base
from sb3_vla.core.options import parse_query as parse_options
from sb3_vla.ray._common import NAMESPACE, RayWorkerError, cluster_resources, ensure_ray, import_ray

SERVER_OPTIONS = ("max_batch", "max_wait_ms", "name", "num_gpus", "num_cpus", "detached", "address")
CLIENT_OPTIONS = ("prefetch", "timeout_s")
SLOT_STRIDE = 1 << 20  # env ids of client k are k * SLOT_STRIDE + its own ids, so stateful bases keep them apart


# ------------------------------------------------------------------------------------------------ batch helpers
def _rows(batch: VLABatch, rows: Sequence[int]) -> VLABatch:
    """The sub-batch of ``rows``."""
    idx = np.asarray(rows, dtype=np.int64)
    return VLABatch(
        obs={k: v[idx] for k, v in batch.obs.items()},
        instructions=None if batch.instructions is None else [batch.instructions[i] for i in idx],
        env_ids=np.asarray(batch.env_ids)[idx] if len(batch.env_ids) else idx,
        env_outputs=None if batch.env_outputs is None else [batch.env_outputs[i] for i in idx],
    )


def _concat(batches: Sequence[VLABatch], offsets: Sequence[int]) -> VLABatch:
    """One batch from several callers' batches (same keys), their env ids shifted by ``offsets``."""
    sizes = [batch_size(b) for b in batches]
    any_instr = any(b.instructions is not None for b in batches)
    instructions: list[Any] | None = None
    if any_instr:
        no_instruction: list[Any] = [None]  # rows of a caller without instructions (backends use their default)
        instructions = [s for b, n in zip(batches, sizes) for s in (b.instructions or no_instruction * n)]
    env_outputs: list[Any] | None = None
    if any(b.env_outputs is not None for b in batches):
        env_outputs = [o for b, n in zip(batches, sizes) for o in (b.env_outputs or [None] * n)]
    ids = [
        (np.asarray(b.env_ids, dtype=np.int64) if len(b.env_ids) else np.arange(n, dtype=np.int64)) + off
        for b, n, off in zip(batches, sizes, offsets)
    ]
    return VLABatch(
        obs={k: np.concatenate([b.obs[k] for b in batches]) for k in batches[0].obs},
        instructions=instructions,
        env_ids=np.concatenate(ids),
        env_outputs=env_outputs,
    )


def _signature(batch: VLABatch) -> tuple:
    """Requests batch together only when their observations stack."""
    return tuple(sorted((k, np.shape(v)[1:], np.asarray(v).dtype.str) for k, v in batch.obs.items()))


# ------------------------------------------------------------------------------------------------------ server
@dataclass
class _Request:
    slot: int
    batch: VLABatch
    future: asyncio.Future
    rows: int
    arrived: float = field(default_factory=time.monotonic)


class BaseServer:
    """The body of the base-server actor (an asyncio actor: requests queue while the model runs in a thread).

    :param factory: builds the base, called once inside the actor.
    :param max_batch: most rows per ``predict`` call; larger requests are split.
    :param max_wait_ms: how long the first queued request waits for others before the batch runs.
    """

    def __init__(self, factory: Callable[[], BaseModel], max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        base = factory()
        if not isinstance(base, BaseModel):
            raise TypeError(f"the base server's factory returned {type(base).__name__}, expected a BaseModel")
        self.base = base
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._queue: list[_Request] = []
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sb3_vla-base")  # one model call at once
        self._slots = 0
        self._batch_rows: list[int] = []
        self._requests = 0

    async def describe(self) -> dict[str, Any]:
        import ray

        b = self.base
        return {
            "name": b.name,
            "action_space": b.action_space,
            "embedding_dim": int(b.embedding_dim),
            "chunk_size": int(b.chunk_size),
            "obs_keys": tuple(b.obs_keys),
            "env_query": b.env_query,
            "stateless": bool(b.stateless),
            "device": str(getattr(b, "device", "n/a")),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "node": str(ray.util.get_node_ip_address()),
        }

    async def register(self) -> int:
        """A new client's slot (its env-id offset)."""
        self._slots += 1
        return self._slots - 1

    async def stats(self) -> dict[str, Any]:
        """``requests`` received and ``batch_rows``: the rows of each ``predict`` call the base ran."""
        return {"requests": self._requests, "batch_rows": list(self._batch_rows), "clients": self._slots}

    async def configure(self, max_batch: int | None = None, max_wait_ms: float | None = None) -> None:
        """Change the batching of a running server (the next batch uses it)."""
        if max_batch is not None:
            self.max_batch = int(max_batch)
        if max_wait_ms is not None:
            self.max_wait_s = float(max_wait_ms) / 1000.0

    async def reset(self, slot: int, env_ids: list[int]) -> None:
        ids = [slot * SLOT_STRIDE + int(i) for i in env_ids]
        await asyncio.get_running_loop().run_in_executor(self._executor, self.base.reset, ids)

    async def predict(self, slot: int, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        loop = asyncio.get_running_loop()
        request = _Request(slot, batch, loop.create_future(), batch_size(batch))
        self._queue.append(request)
        self._requests += 1
        if self._event is None:
            self._event = asyncio.Event()
        self._event.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve())
        return await request.future

    async def _serve(self) -> None:
        """Run batches while requests are queued: wait up to ``max_wait_ms`` after the oldest for ``max_batch`` rows."""
        assert self._event is not None
        loop = asyncio.get_running_loop()
        while self._queue:
            deadline = self._queue[0].arrived + self.max_wait_s
            while sum(r.rows for r in self._queue) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            take: list[_Request] = []
            rows = 0
            while self._queue and (not take or rows + self._queue[0].rows <= self.max_batch):
                take.append(self._queue.pop(0))
                rows += take[-1].rows
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, take)
            except Exception as e:  # the callers get the base's own error
                for r in take:
                    if not r.future.done():
                        r.future.set_exception(e)
                continue
            for r, out in zip(take, outputs):
                if not r.future.done():
                    r.future.set_result(out)

    def _run(self, take: list[_Request]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Predict the requests in ``take`` (grouped by observation shapes, in slices of ``max_batch`` rows)."""
        results: list[Any] = [None] * len(take)
        groups: dict[tuple, list[int]] = {}
        for j, r in enumerate(take):
            groups.setdefault(_signature(r.batch), []).append(j)
        for members in groups.values():
            batch = _concat([take[j].batch for j in members], [take[j].slot * SLOT_STRIDE for j in members])
            n = batch_size(batch)
            actions: list[np.ndarray] = []
            embs: list[np.ndarray | None] = []
            for start in range(0, n, self.max_batch):
                part = batch if n <= self.max_batch else _rows(batch, range(start, min(n, start + self.max_batch)))
                action, emb = self.base.predict(part)
                self._batch_rows.append(batch_size(part))
                actions.append(np.asarray(action, dtype=np.float32))
                embs.append(None if emb is None else np.asarray(emb, dtype=np.float32).reshape(len(action), -1))
            action_all = np.concatenate(actions)
            given = [e for e in embs if e is not None]
            emb_all = np.concatenate(given) if len(given) == len(embs) else None
            bounds = np.cumsum([take[j].rows for j in members])[:-1]
            for j, a, e in zip(
                members,
                np.split(action_all, bounds),
                np.split(emb_all, bounds) if emb_all is not None else [None] * len(members),
            ):
                results[j] = (a, e)
        return results


def _server_name(inner: str, observation_space: Any, action_space: Any, base_kwargs: dict[str, Any]) -> str:
    key = repr((inner, observation_space, action_space, sorted(base_kwargs.items(), key=lambda kv: kv[0])))
    return "sb3_vla-base-" + hashlib.sha1(key.encode()).hexdigest()[:16]


def serve_base(
    base: str | Callable[[], BaseModel],
    observation_space: spaces.Space | None = None,
    action_space: spaces.Box | None = None,
    *,
    name: str | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    num_gpus: float | None = None,
    num_cpus: float = 0.0,
    detached: bool = False,
    address: str | None = None,
    base_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Start the base server, or find the one already running under that name; return its actor handle.

    :param base: a base spec (built inside the actor with ``make_base(base, observation_space, action_space,
        **base_kwargs)``) or a zero-argument factory returning a :class:`~sb3_vla.bases.BaseModel`.
    :param name: the actor's name in the ``sb3_vla`` namespace; default: a hash of the spec, spaces and
        ``base_kwargs`` (so every wrapper asking for the same base finds the same server), or a fresh name for a
        factory.
    :param max_batch: most rows per model call.
    :param max_wait_ms: how long a request waits for others to batch with.
    :param num_gpus: GPUs the actor reserves; ``None``: 1 when the cluster has a GPU, else 0.
    :param num_cpus: CPUs the actor reserves (0: it mostly waits on the model; raise it for a CPU model).
    :param detached: keep the server alive after the job that started it ends (for several jobs, e.g. Optuna
        workers, sharing it); stop it with ``ray.kill(ray.get_actor(name, namespace="sb3_vla"))``.
    :param address: the cluster to join when this process is not connected yet (default ``RAY_ADDRESS``/local).
    :param base_kwargs: keyword arguments for the backend when ``base`` is a spec.

    Example::

        server = serve_base("hf:/models/openvla-7b?unnorm_key=bridge_orig", max_batch=16, max_wait_ms=5)
        base = RayServedBase(server)  # a BaseModel for VLAObservationWrapper
    """
    ray = ensure_ray(address)
    kwargs = dict(base_kwargs or {})
    if isinstance(base, str):
        factory: Callable[[], BaseModel] = functools.partial(make_base, base, observation_space, action_space, **kwargs)
        name = name or _server_name(base, observation_space, action_space, kwargs)
    elif callable(base):
        factory = base
        name = name or f"sb3_vla-base-{time.time_ns():x}"
    else:
        raise TypeError(f"serve_base takes a base spec string or a factory, got {type(base).__name__}")
    if int(max_batch) < 1 or float(max_wait_ms) < 0:
        raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch} and {max_wait_ms}")
    if num_gpus is None:
        num_gpus = 1.0 if cluster_resources(ray).get("GPU", 0.0) >= 1.0 else 0.0
    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "num_gpus": num_gpus,
        "num_cpus": num_cpus,
        "max_concurrency": 1000,
    }
    if detached:
        options["lifetime"] = "detached"
    return ray.remote(BaseServer).options(**options).remote(factory, max_batch=max_batch, max_wait_ms=max_wait_ms)


# ------------------------------------------------------------------------------------------------------ client
@dataclass
class _Chunk:
    actions: np.ndarray  # (H, *A)
    embedding: np.ndarray | None
    pos: int = 0


class _Pending:
    """A prefetch request in flight; its result is fetched once, by whichever env needs it first."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.result: tuple[np.ndarray, np.ndarray | None] | None = None


class RayServedBase(BaseModel):
    """A :class:`~sb3_vla.bases.BaseModel` whose ``predict`` runs on a base server (see :func:`serve_base`).

    It declares what the served base declares (action space, embedding size, chunk size, observation keys, env
    query), so the observation wrappers treat it as the base itself.

    :param server: the server's actor handle, or its name in the ``sb3_vla`` namespace.
    :param prefetch: ``0``: ask when the chunk runs out (as a local base). ``k >= 1``: ask for the next chunk ``k``
        steps before the current one runs out, hiding up to ``k`` env steps of the base's latency; the first
        action of each chunk is ``k`` steps stale. The client then keeps the chunks itself (it declares
        ``chunk_size=1`` and is stateful, so the wrapper calls it every step; ``query_interval`` has no effect).
    :param timeout_s: seconds a request may take before :class:`~sb3_vla.ray.RayWorkerError`.

    Example::

        base = make_base("ray:scripted?max_batch=8&max_wait_ms=5", env.observation_space, env.action_space)
        venv = VecVLAObservationWrapper(venv, base)
    """

    def __init__(self, server: Any, prefetch: int = 0, timeout_s: float = 120.0) -> None:
        ray = import_ray("the ray: base")
        if isinstance(server, str):
            try:
                server = ray.get_actor(server, namespace=NAMESPACE)
            except ValueError as e:
                raise ValueError(f"no base server named {server!r} in namespace {NAMESPACE!r}; start one first") from e
        self.server = server
        self.timeout_s = float(timeout_s)
        self.num_requests = 0  # requests sent to the server
        self.wait_s = 0.0  # seconds spent waiting for the server (what prefetching did not hide)
        info = self._get(server.describe.remote(), "describe")
        self.slot = int(self._get(server.register.remote(), "register"))
        self.info = info
        self.inner_chunk_size = max(1, int(info["chunk_size"]))
        self.prefetch = int(prefetch)
        if not 0 <= self.prefetch <= self.inner_chunk_size:
            raise ValueError(
                f"prefetch must be between 0 and the base's chunk size {self.inner_chunk_size}, got {prefetch}"
            )
        self.action_space = info["action_space"]
        self.embedding_dim = int(info["embedding_dim"])
        self.obs_keys = tuple(info["obs_keys"])
        self.env_query = info["env_query"]
        self.inner_stateless = bool(info["stateless"])
        self.chunk_size = 1 if self.prefetch else self.inner_chunk_size
        self.stateless = self.inner_stateless and not self.prefetch
        self._chunks: dict[int, _Chunk] = {}
        self._pending: dict[int, tuple[_Pending, int]] = {}

    @property
    def name(self) -> str:
        return f"ray:{self.info['name']}"

    def _get(self, ref: Any, what: str) -> Any:
        ray = import_ray("the ray: base")  # not kept on self: wrappers deep-copy kwargs, modules do not copy
        t0 = time.perf_counter()
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError as e:
            raise RayWorkerError(
                f"the base server did not answer {what} within {self.timeout_s:g} s (overloaded, or its actor cannot "
                "be scheduled: not enough GPUs/CPUs); raise timeout_s or check `ray status`"
            ) from e
        except ray.exceptions.RayActorError as e:
            raise RayWorkerError(f"the base server died or failed to start during {what}: {e}") from e
        finally:
            self.wait_s += time.perf_counter() - t0

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        ids = sorted(set(self._chunks) | set(self._pending)) if env_ids is None else [int(i) for i in env_ids]
        for i in ids:
            self._chunks.pop(i, None)
            self._pending.pop(i, None)
        if not self.inner_stateless and ids:
            self._get(self.server.reset.remote(self.slot, ids), "reset")

    def _request(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        self.num_requests += 1
        action, emb = self._get(self.server.predict.remote(self.slot, batch), "predict")
        # arrays from Ray's object store are read-only; the wrappers clip and zero in place
        return np.array(action, dtype=np.float32), None if emb is None else np.array(emb, dtype=np.float32)

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.prefetch:
            return self._request(batch)
        return self._predict_prefetch(batch)

    def _predict_prefetch(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        n = batch_size(batch)
        ids = [int(i) for i in (batch.env_ids if len(batch.env_ids) else np.arange(n))]
        fresh = []
        for r, e in enumerate(ids):
            chunk = self._chunks.get(e)
            if chunk is not None and chunk.pos < len(chunk.actions):
                continue
            pending = self._pending.pop(e, None)
            if pending is None:
                fresh.append(r)
                continue
            req, row = pending
            if req.result is None:
                req.result = self._get(req.ref, "predict")
            self._store(e, req.result, row)
        if fresh:
            self._store_rows([ids[r] for r in fresh], self._request(_rows(batch, fresh)))
        actions: list[np.ndarray] = []
        embs: list[np.ndarray | None] = []
        ahead: list[int] = []
        for r, e in enumerate(ids):
            chunk = self._chunks[e]
            actions.append(chunk.actions[chunk.pos])
            embs.append(chunk.embedding)
            chunk.pos += 1
            if len(chunk.actions) - chunk.pos == self.prefetch - 1:
                ahead.append(r)
        if ahead:  # ask now for the chunk these envs need `prefetch` steps from now
            self.num_requests += 1
            req = _Pending(self.server.predict.remote(self.slot, _rows(batch, ahead)))
            for j, r in enumerate(ahead):
                self._pending[ids[r]] = (req, j)
        zero = np.zeros(self.embedding_dim, dtype=np.float32)
        emb = None if self.embedding_dim == 0 else np.stack([zero if e is None else e for e in embs])
        return np.stack(actions).astype(np.float32), emb

    def _store(self, env_id: int, result: tuple[np.ndarray, np.ndarray | None], row: int) -> None:
        action, emb = result
        a = np.asarray(action[row], dtype=np.float32)
        if a.shape == tuple(self.action_space.shape):  # a single action is a chunk of one
            a = a[None]
        self._chunks[env_id] = _Chunk(a, None if emb is None else np.asarray(emb[row], dtype=np.float32))

    def _store_rows(self, env_ids: list[int], result: tuple[np.ndarray, np.ndarray | None]) -> None:
        for row, e in enumerate(env_ids):
            self._store(e, result, row)

    def stats(self) -> dict[str, Any]:
        """The server's counters (see :meth:`BaseServer.stats`)."""
        return self._get(self.server.stats.remote(), "stats")

    def close(self) -> None:
        """Forget this client's chunks; the server stays up for its other clients (it ends with its job)."""
        self._chunks.clear()
        self._pending.clear()


# ----------------------------------------------------------------------------------------------- the ray: spec
def parse_ray_spec(arg: str, base_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Split ``"<inner spec>?max_batch=32&max_wait_ms=5&<inner options>"`` (and ``base_kwargs``) into the inner
    spec with its own options, the server options and the client options; ``base_kwargs`` entries named like a
    server or client option are taken out of ``base_kwargs`` (they win over inline ones)."""
    main, q, query = arg.partition("?")
    ours = [p for p in query.split("&") if p.partition("=")[0] in SERVER_OPTIONS + CLIENT_OPTIONS]
    rest = [p for p in query.split("&") if p and p not in ours]
    _, opts = parse_options("x?" + "&".join(ours)) if ours else ("", {})
    for key in SERVER_OPTIONS + CLIENT_OPTIONS:
        if key in base_kwargs:
            opts[key] = base_kwargs.pop(key)
    inner = main + ("?" + "&".join(rest) if rest else "")
    server = {k: v for k, v in opts.items() if k in SERVER_OPTIONS}
    client = {k: v for k, v in opts.items() if k in CLIENT_OPTIONS}
    return inner, server, client


def make_ray_base(
    arg: str, *, observation_space: spaces.Space | None, action_space: spaces.Box | None, **base_kwargs: Any
) -> RayServedBase:
    """The ``ray:<inner spec>`` factory: start or find the server for the inner spec and return a client.

    Server options: ``max_batch``, ``max_wait_ms``, ``name``, ``num_gpus``, ``num_cpus``, ``detached``,
    ``address``; client options: ``prefetch``, ``timeout_s``. Other options belong to the inner spec.

    Example::

        base = make_base("ray:hf:/models/openvla-7b?unnorm_key=bridge_orig&max_batch=32&max_wait_ms=5",
                         env.observation_space, env.action_space)
    """
    kwargs = dict(base_kwargs)
    inner, server_opts, client_opts = parse_ray_spec(arg, kwargs)
    if not inner:
        raise ValueError(
            "base spec 'ray:' needs the spec of the base to serve: ray:<spec>?max_batch=32&max_wait_ms=5, "
            "e.g. ray:hf:/models/openvla-7b?unnorm_key=bridge_orig"
        )
    if inner.startswith("ray:"):
        raise ValueError(f"base spec 'ray:{arg}' serves a served base; use one 'ray:' prefix")
    server = serve_base(inner, observation_space, action_space, base_kwargs=kwargs, **server_opts)
    return RayServedBase(server, **client_opts)


def ray_base_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    """The ``ray:<inner spec>?max_batch=32&max_wait_ms=5`` spec factory (the registry's entry point for ``ray``)."""
    import_ray(f"base spec 'ray:{arg}'")
    return make_ray_base(arg, observation_space=observation_space, action_space=action_space, **kwargs)
