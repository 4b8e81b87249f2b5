"""The residual-aware search space: the algorithm's own hyperparameters (rl-zoo's ranges) plus the residual knobs
(a factor on the configured ``residual_scale``, the base's ``query_interval``, whether the policy sees the base action
and the base's embedding) and the extractor sizes.

As in rl-zoo (``rl_zoo3/hyperparams_opt.py``), :func:`sample_residual_params` suggests primitives only (what Optuna
stores) and :func:`convert_residual_params` builds the objects; the converter starts from the YAML entry's
``policy_kwargs`` and always keeps ``features_extractor_class``.

>>> import optuna
>>> trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
>>> params = sample_residual_params(trial, SearchSpace("sac"))
>>> hp = convert_residual_params(params, "sac", residual_scale=0.2)
>>> hp["policy_kwargs"]["features_extractor_class"].__name__
'VLAFeaturesExtractor'
>>> bool(0.2 * 0.25 <= hp["residual_scale"] <= 0.2 * 4)
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import optuna
from gymnasium import spaces
from torch import nn

from sb3_vla.core.algos import ALGOS
from sb3_vla.core.keys import ACTION_KEY, EMBEDDING_KEY
from sb3_vla.extractor import VLAFeaturesExtractor, classify_key

#: the algorithms with a residual search space, split by the algorithm table's off-policy flag
TUNABLE = ("sac", "tqc", "td3", "ddpg", "ppo", "a2c")
OFF_POLICY = tuple(name for name in TUNABLE if ALGOS[name].off_policy)
ON_POLICY = tuple(name for name in TUNABLE if not ALGOS[name].off_policy)

OFF_POLICY_NET_ARCH = {"small": [64, 64], "medium": [256, 256], "big": [400, 300]}
ON_POLICY_NET_ARCH = {
    "tiny": {"pi": [64], "vf": [64]},
    "small": {"pi": [64, 64], "vf": [64, 64]},
    "medium": {"pi": [256, 256], "vf": [256, 256]},
}
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
VECTOR_MLP = {"none": [], "small": [64], "medium": [128, 128]}
# Residual knobs live in the env wrappers' kwargs; sb3_vla.config.resolve routes these override keys there.
ENV_KNOBS = ("residual_scale", "query_interval", "keep_base_in_obs")


@dataclass
class SearchSpace:
    """What to sample for one algorithm and env.

    :param algo: algorithm name (``sac``, ``tqc``, ``td3``, ``ddpg``, ``ppo``, ``a2c``).
    :param residual: the env has the VLA wrappers (sample the residual knobs).
    :param has_embedding: the observation has ``vla_embedding`` (sample whether the policy sees it).
    :param has_images: image keys present (sample the CNN output size).
    :param has_pointclouds: point-cloud keys present (sample the PointNet output size).
    :param query_intervals: choices for the base's ``query_interval`` (empty: not tuned).
    :param residual_scale_factor: log-uniform range of the factor applied to the configured ``residual_scale``.
    :param n_envs: number of training envs (PPO's batch size is kept <= ``n_steps * n_envs``).
    """

    algo: str
    residual: bool = True
    has_embedding: bool = False
    has_images: bool = False
    has_pointclouds: bool = False
    query_intervals: tuple[int, ...] = (1, 2, 4)
    residual_scale_factor: tuple[float, float] = (0.25, 4.0)
    n_envs: int = 1

    def __post_init__(self) -> None:
        if self.algo not in TUNABLE:
            raise ValueError(f"no search space for algorithm {self.algo!r}; tunable: {list(TUNABLE)}")

    @classmethod
    def from_observation_space(
        cls, algo: str, observation_space: spaces.Space, residual: bool, **kwargs: Any
    ) -> SearchSpace:
        """Detect the embedding / image / point-cloud keys of a (wrapped) env's observation space."""
        kinds: set[str] = set()
        if isinstance(observation_space, spaces.Dict):
            kinds = {classify_key(k, s) for k, s in observation_space.spaces.items()}
            has_embedding = EMBEDDING_KEY in observation_space.spaces
        else:
            has_embedding = False
        return cls(
            algo,
            residual=residual,
            has_embedding=has_embedding,
            has_images="image" in kinds,
            has_pointclouds="pointcloud" in kinds,
            **kwargs,
        )


def sample_residual_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Suggest one configuration (primitives only: floats, ints, strings, bools).

    :param trial: the Optuna trial.
    :param space: what to sample.
    :return: the sampled primitives, keyed as Optuna stores them (``trial.params``).
    """
    p: dict[str, Any] = {}
    p["one_minus_gamma"] = trial.suggest_float("one_minus_gamma", 0.0001, 0.05, log=True)
    p["learning_rate"] = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    if space.algo in OFF_POLICY:
        p["batch_size_pow"] = trial.suggest_int("batch_size_pow", 5, 9)
        p["train_freq"] = trial.suggest_int("train_freq", 1, 8)
        p["tau"] = trial.suggest_float("tau", 0.001, 0.08, log=True)
        p["net_arch"] = trial.suggest_categorical("net_arch", list(OFF_POLICY_NET_ARCH))
        if space.algo in ("td3", "ddpg"):
            p["noise_std"] = trial.suggest_float("noise_std", 0.0, 0.5)
        if space.algo == "tqc":
            p["n_quantiles"] = trial.suggest_int("n_quantiles", 5, 50)
            p["top_quantiles_to_drop_per_net"] = trial.suggest_int(
                "top_quantiles_to_drop_per_net", 0, min(p["n_quantiles"] - 1, 5)
            )
    else:
        p["n_steps_pow"] = trial.suggest_int("n_steps_pow", 5, 11)
        p["batch_size_pow"] = trial.suggest_int("batch_size_pow", 5, 9)
        p["one_minus_gae_lambda"] = trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True)
        p["ent_coef"] = trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
        p["clip_range"] = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
        p["n_epochs"] = trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
        p["max_grad_norm"] = trial.suggest_float("max_grad_norm", 0.3, 2.0)
        p["net_arch"] = trial.suggest_categorical("net_arch", list(ON_POLICY_NET_ARCH))
        p["activation_fn"] = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    # extractor sizes
    p["vector_mlp"] = trial.suggest_categorical("vector_mlp", list(VECTOR_MLP))
    if space.has_images:
        p["cnn_output_dim"] = trial.suggest_categorical("cnn_output_dim", [64, 128, 256])
    if space.has_pointclouds:
        p["pointnet_output_dim"] = trial.suggest_categorical("pointnet_output_dim", [64, 128, 256])
    if space.residual:
        lo, hi = space.residual_scale_factor
        p["residual_scale_factor"] = trial.suggest_float("residual_scale_factor", lo, hi, log=True)
        if space.query_intervals:
            p["query_interval"] = trial.suggest_categorical("query_interval", list(space.query_intervals))
        p["policy_sees_base_action"] = trial.suggest_categorical("policy_sees_base_action", [True, False])
    if space.has_embedding:
        p["policy_sees_embedding"] = trial.suggest_categorical("policy_sees_embedding", [True, False])
        if p["policy_sees_embedding"]:
            p["embedding_output_dim"] = trial.suggest_categorical("embedding_output_dim", [32, 64, 128])
    # human-readable values next to the primitives
    trial.set_user_attr("gamma", 1 - p["one_minus_gamma"])
    trial.set_user_attr("batch_size", 2 ** p["batch_size_pow"])
    return p


def convert_residual_params(
    params: dict[str, Any],
    algo: str,
    policy_kwargs: dict[str, Any] | None = None,
    residual_scale: float | list[float] | None = None,
    n_envs: int = 1,
) -> dict[str, Any]:
    """Turn sampled primitives into hyperparameters (``sb3_vla.config.resolve`` overrides).

    :param params: the primitives (``trial.params`` or :func:`sample_residual_params`'s result).
    :param algo: algorithm name.
    :param policy_kwargs: the YAML entry's ``policy_kwargs`` (evaluated); the result starts from a copy of it, so
        nothing configured there (``features_extractor_class``, other extractor kwargs) is dropped.
    :param residual_scale: the configured ``residual_scale`` that ``residual_scale_factor`` multiplies
        (default 0.1, the wrapper's default).
    :param n_envs: number of training envs (PPO: ``batch_size <= n_steps * n_envs``).
    :return: algorithm kwargs, ``policy_kwargs`` (with ``features_extractor_class``) and the residual knobs
        ``residual_scale`` / ``query_interval`` / ``keep_base_in_obs`` (wrapper kwargs).
    """
    out: dict[str, Any] = {}
    pk = copy.deepcopy(dict(policy_kwargs or {}))
    pk.setdefault("features_extractor_class", VLAFeaturesExtractor)
    fe = dict(pk.get("features_extractor_kwargs") or {})
    if "one_minus_gamma" in params:
        out["gamma"] = 1 - params["one_minus_gamma"]
    if "learning_rate" in params:
        out["learning_rate"] = params["learning_rate"]
    if algo in OFF_POLICY:
        if "batch_size_pow" in params:
            out["batch_size"] = 2 ** params["batch_size_pow"]
        if "train_freq" in params:
            out["train_freq"] = params["train_freq"]
            out["gradient_steps"] = params["train_freq"]  # one update per collected transition, as in rl-zoo
        if "tau" in params:
            out["tau"] = params["tau"]
        if "net_arch" in params:
            pk["net_arch"] = list(OFF_POLICY_NET_ARCH[params["net_arch"]])
        if "noise_std" in params:
            out["noise_type"] = "normal"
            out["noise_std"] = params["noise_std"]
        if "n_quantiles" in params:
            pk["n_quantiles"] = params["n_quantiles"]
        if "top_quantiles_to_drop_per_net" in params:
            out["top_quantiles_to_drop_per_net"] = params["top_quantiles_to_drop_per_net"]
    else:
        n_steps = 2 ** params["n_steps_pow"] if "n_steps_pow" in params else None
        if n_steps is not None:
            out["n_steps"] = n_steps
        if "batch_size_pow" in params:
            batch = 2 ** params["batch_size_pow"]
            out["batch_size"] = min(batch, n_steps * max(n_envs, 1)) if n_steps else batch
        if "one_minus_gae_lambda" in params:
            out["gae_lambda"] = 1 - params["one_minus_gae_lambda"]
        for key in ("ent_coef", "clip_range", "n_epochs", "max_grad_norm"):
            if key in params:
                out[key] = params[key]
        if "net_arch" in params:
            pk["net_arch"] = copy.deepcopy(ON_POLICY_NET_ARCH[params["net_arch"]])
        if "activation_fn" in params:
            pk["activation_fn"] = ACTIVATIONS[params["activation_fn"]]
    if "vector_mlp" in params:
        fe["mlp_net_arch"] = list(VECTOR_MLP[params["vector_mlp"]])
    for key in ("cnn_output_dim", "pointnet_output_dim", "embedding_output_dim"):
        if key in params:
            fe[key] = params[key]
    exclude = [k for k in fe.get("exclude_keys", []) if k != EMBEDDING_KEY]
    if params.get("policy_sees_embedding") is False:
        exclude.append(EMBEDDING_KEY)
    if "policy_sees_base_action" in params:
        out["keep_base_in_obs"] = bool(params["policy_sees_base_action"])
        if not params["policy_sees_base_action"]:
            exclude = [k for k in exclude if k != ACTION_KEY]  # the key is gone from the observation
    if exclude or "exclude_keys" in fe:
        fe["exclude_keys"] = exclude
    if fe:
        pk["features_extractor_kwargs"] = fe
    out["policy_kwargs"] = pk
    if "residual_scale_factor" in params:
        base_scale = 0.1 if residual_scale is None else residual_scale
        factor = float(params["residual_scale_factor"])
        if isinstance(base_scale, list | tuple):
            out["residual_scale"] = [float(s) * factor for s in base_scale]
        else:
            out["residual_scale"] = float(base_scale) * factor
    if "query_interval" in params:
        out["query_interval"] = int(params["query_interval"])
    return out
