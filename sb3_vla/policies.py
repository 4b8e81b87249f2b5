"""Policies whose residual starts at zero, so training starts from the base policy's behaviour.

Each class is the stock SB3 policy with two changes: the default features extractor is
:class:`~sb3_vla.extractor.VLAFeaturesExtractor`, and the action head's last layer is zeroed after it is built
(deterministic actions are exactly 0 at step 0, so the executed action equals the base action). Name them as dotted
classes in zoo YAML (``policy: sb3_vla.policies.ResidualSACPolicy``); rl-zoo ``eval``-s ``policy_kwargs`` strings
with only ``th``/``nn``/``np`` in scope, so it cannot name our extractor there.

With a stock ``"MultiInputPolicy"``, :class:`ZeroResidualInitCallback` does the same zeroing at training start.
"""

from __future__ import annotations

from typing import Any

import torch as th
from sb3_contrib.tqc.policies import TQCPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_vla.extractor import VLAFeaturesExtractor


def _last_linear(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"no nn.Linear layer found in {type(module).__name__}")
    return linears[-1]


def zero_residual_head(policy: BasePolicy, log_std_init: float | None = None) -> None:
    """Zero the last layer of the policy's action head (SAC/TQC ``actor.mu``, TD3 ``actor.mu``, PPO ``action_net``).

    :param policy: an SB3 policy.
    :param log_std_init: for SAC/TQC actors without gSDE, also make the state-dependent log-std start at this
        constant (zero weights, this bias): a smaller initial exploration noise than SB3's default.
    """
    action_net = getattr(policy, "action_net", None)
    if isinstance(action_net, nn.Module):  # on-policy ActorCriticPolicy
        layer = _last_linear(action_net)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        return
    actor = getattr(policy, "actor", None)
    if actor is None or not hasattr(actor, "mu"):
        raise TypeError(f"cannot find an action head in {type(policy).__name__}")
    layer = _last_linear(actor.mu)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    log_std = getattr(actor, "log_std", None)
    if log_std_init is not None and isinstance(log_std, nn.Linear) and not getattr(actor, "use_sde", False):
        nn.init.zeros_(log_std.weight)
        nn.init.constant_(log_std.bias, log_std_init)
    target = getattr(policy, "actor_target", None)
    if target is not None:  # TD3/DDPG: the target starts as a copy of the actor
        target.load_state_dict(actor.state_dict())


def layer_norm_critic(critic: nn.Module) -> nn.Module:
    """Insert a LayerNorm after every hidden linear layer of each Q-network of an SB3 critic (SAC/TD3
    ``ContinuousCritic``, TQC ``Critic``), in place; the output layer is left alone. Layer-normed critics keep
    Q-values bounded under high update-to-data ratios (ResFiT, RLPD).

    :param critic: a critic with ``q_networks`` registered as ``qf0``, ``qf1``, ...
    :return: the same critic.
    """
    q_networks = getattr(critic, "q_networks", None)
    if not q_networks:
        raise TypeError(f"{type(critic).__name__} has no q_networks to layer-norm")
    for idx, q_net in enumerate(q_networks):
        linears = [m for m in q_net if isinstance(m, nn.Linear)]
        layers: list[nn.Module] = []
        for m in q_net:
            layers.append(m)
            if isinstance(m, nn.Linear) and m is not linears[-1]:
                layers.append(nn.LayerNorm(m.out_features))
        new = nn.Sequential(*layers).to(linears[-1].weight.device)
        setattr(critic, f"qf{idx}", new)
        q_networks[idx] = new
    return critic


def _q_value(out: Any) -> th.Tensor:
    """One pessimistic value per row: the min over SAC/TD3 critics, or over TQC critics of their mean quantile."""
    if isinstance(out, (tuple, list)):
        return th.cat(out, dim=1).min(dim=1).values
    return out.mean(dim=-1).min(dim=1).values  # TQC: (B, n_critics, n_quantiles)


def gate_residual(critic: nn.Module, observation: Any, actions: th.Tensor) -> th.Tensor:
    """Keep each row's residual only where the critic values it above the base alone: ``Q(s, a) > Q(s, 0)``.

    The residual wrappers execute the base's own action for a zero residual, and progressive exploration fills
    the replay buffer with such steps, so ``Q(s, 0)`` is the critic's best-trained value. Rows it does not prefer
    are set to zero (the base's action).

    :param critic: the policy's critic, ``critic(obs, actions)`` -> per-critic values (SAC/TD3) or quantiles (TQC).
    :param observation: the preprocessed observation batch the actor saw.
    :param actions: the actor's actions in [-1, 1], ``(B, R)``.
    :return: the gated actions.
    """
    zeros = th.zeros_like(actions)
    with th.no_grad():
        keep = _q_value(critic(observation, actions)) > _q_value(critic(observation, zeros))
    return th.where(keep.unsqueeze(-1), actions, zeros)


class _ResidualOffPolicyMixin:
    """Shared by the SAC and TQC residual policies: default extractor, zeroed mean head, initial log-std,
    optional layer-normed critic, optional critic-gated deterministic actions."""

    def __init__(
        self,
        *args: Any,
        residual_log_std_init: float | None = -1.0,
        critic_layer_norm: bool = False,
        residual_gate: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("features_extractor_class", VLAFeaturesExtractor)
        self.residual_log_std_init = residual_log_std_init
        self.critic_layer_norm = bool(critic_layer_norm)
        self.residual_gate = bool(residual_gate)
        super().__init__(*args, **kwargs)
        zero_residual_head(self, residual_log_std_init)  # type: ignore[arg-type]

    def _predict(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        actions = super()._predict(observation, deterministic)  # type: ignore[misc]
        if self.residual_gate and deterministic:
            return gate_residual(self.critic, observation, actions)  # type: ignore[attr-defined]
        return actions

    def make_critic(self, features_extractor: Any = None) -> Any:
        critic = super().make_critic(features_extractor)  # type: ignore[misc]
        return layer_norm_critic(critic) if self.critic_layer_norm else critic

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data["residual_log_std_init"] = self.residual_log_std_init
        data["critic_layer_norm"] = self.critic_layer_norm
        data["residual_gate"] = self.residual_gate
        return data


class ResidualSACPolicy(_ResidualOffPolicyMixin, SACPolicy):
    """SAC policy with :class:`VLAFeaturesExtractor` by default and a zero-initialised residual head.

    :param residual_log_std_init: initial log-std of the residual's exploration noise (``None``: SB3 default).
    :param critic_layer_norm: LayerNorm after each hidden layer of the Q-networks (see :func:`layer_norm_critic`).
    :param residual_gate: deterministic actions (evaluation, deployment) keep the residual only where the critic
        values it above the base alone (:func:`gate_residual`); exploration while training is unchanged.
        The other parameters are :class:`stable_baselines3.sac.policies.SACPolicy`'s.

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = SAC(ResidualSACPolicy, env, buffer_size=1000)
        >>> obs, _ = env.reset(seed=0)
        >>> model.predict(obs, deterministic=True)[0]  # a zero residual: the env executes the base's action
        array([0.], dtype=float32)
    """


class ResidualTD3Policy(TD3Policy):
    """TD3 policy with :class:`VLAFeaturesExtractor` by default and a zero-initialised residual head.

    :param critic_layer_norm: see :class:`ResidualSACPolicy`.
    :param residual_gate: see :class:`ResidualSACPolicy`.

    Example::

        >>> from stable_baselines3 import TD3
        >>> from sb3_vla import make_residual_env
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = TD3(ResidualTD3Policy, env, buffer_size=1000)
        >>> obs, _ = env.reset(seed=0)
        >>> model.predict(obs, deterministic=True)[0]  # a zero residual: the env executes the base's action
        array([0.], dtype=float32)
    """

    def __init__(self, *args: Any, critic_layer_norm: bool = False, residual_gate: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", VLAFeaturesExtractor)
        self.critic_layer_norm = bool(critic_layer_norm)
        self.residual_gate = bool(residual_gate)
        super().__init__(*args, **kwargs)
        zero_residual_head(self)

    def _predict(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        actions = super()._predict(observation, deterministic)
        if self.residual_gate and deterministic:
            return gate_residual(self.critic, observation, actions)
        return actions

    def make_critic(self, features_extractor: Any = None) -> Any:
        critic = super().make_critic(features_extractor)
        return layer_norm_critic(critic) if self.critic_layer_norm else critic

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["critic_layer_norm"] = self.critic_layer_norm
        data["residual_gate"] = self.residual_gate
        return data


class ResidualActorCriticPolicy(MultiInputActorCriticPolicy):
    """PPO/A2C policy with :class:`VLAFeaturesExtractor` by default, a zero-initialised mean head, and a smaller
    initial exploration noise (``log_std_init=-1``).

    Example::

        >>> from stable_baselines3 import PPO
        >>> from sb3_vla import make_residual_env
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = PPO(ResidualActorCriticPolicy, env, n_steps=64)
        >>> obs, _ = env.reset(seed=0)
        >>> model.predict(obs, deterministic=True)[0]  # a zero residual: the env executes the base's action
        array([0.], dtype=float32)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", VLAFeaturesExtractor)
        kwargs.setdefault("log_std_init", -1.0)
        super().__init__(*args, **kwargs)
        zero_residual_head(self)


ResidualPPOPolicy = ResidualActorCriticPolicy


class ResidualTQCPolicy(_ResidualOffPolicyMixin, TQCPolicy):
    """TQC policy (sb3-contrib) with :class:`VLAFeaturesExtractor` by default and a zero-initialised residual head.

    :param residual_log_std_init: see :class:`ResidualSACPolicy`.
    :param critic_layer_norm: see :class:`ResidualSACPolicy`.
    :param residual_gate: see :class:`ResidualSACPolicy`.

    Example::

        >>> from sb3_contrib import TQC
        >>> from sb3_vla import make_residual_env
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = TQC(ResidualTQCPolicy, env, buffer_size=1000)
        >>> obs, _ = env.reset(seed=0)
        >>> model.predict(obs, deterministic=True)[0]  # a zero residual: the env executes the base's action
        array([0.], dtype=float32)
    """


class ZeroResidualInitCallback(BaseCallback):
    """Zero the action head at the start of training (for stock ``"MultiInputPolicy"`` models).

    :param log_std_init: see :func:`zero_residual_head`.

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = SAC("MultiInputPolicy", env, buffer_size=1000)
        >>> obs, _ = env.reset(seed=0)
        >>> bool(model.predict(obs, deterministic=True)[0] != 0)  # SB3's random initialisation
        True
        >>> _ = model.learn(1, callback=ZeroResidualInitCallback())
        >>> model.predict(obs, deterministic=True)[0]
        array([0.], dtype=float32)
    """

    def __init__(self, log_std_init: float | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.log_std_init = log_std_init

    def _on_training_start(self) -> None:
        if self.model.num_timesteps == 0:
            zero_residual_head(self.model.policy, self.log_std_init)

    def _on_step(self) -> bool:
        return True


# Strategy 4, fine-tuning the VLA's own heads with PPO: its own module, re-exported for zoo YAML `policy:` names.
from sb3_vla.finetune_policy import VLAActorCriticPolicy as VLAActorCriticPolicy  # noqa: E402
