"""Strategy 4: VLAActorCriticPolicy fine-tunes a user's VLA module (EmbodiChain interface) with stock PPO."""

from __future__ import annotations

import doctest
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3 import PPO
from torch import nn
from torch.distributions import Normal

import sb3_vla.finetune_policy as finetune_policy
from sb3_vla.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from sb3_vla.finetune_policy import FROZEN_DIGEST_KEY, VLAActorCriticPolicy, load_vla_model
from sb3_vla.policies import VLAActorCriticPolicy as ExportedPolicy


class TinyActor(nn.Module):
    """Encoder -> Gaussian head with a learnable log-std; ``forward`` samples unless ``deterministic``."""

    def __init__(self, obs_dim: int = 3, action_dim: int = 1, hidden: int = 16, batch_norm: bool = False) -> None:
        super().__init__()
        norm: list[nn.Module] = [nn.BatchNorm1d(hidden)] if batch_norm else []
        self.encoder = nn.Sequential(nn.Linear(obs_dim, hidden), *norm, nn.Tanh())
        self.head = nn.Linear(hidden, action_dim)
        self.log_std = nn.Parameter(th.full((action_dim,), -0.5))

    def _dist(self, observations: dict[str, th.Tensor]) -> Normal:
        return Normal(self.head(self.encoder(observations["obs"])), self.log_std.exp())

    def forward(self, observations: dict[str, th.Tensor], deterministic: bool = False) -> th.Tensor:
        dist = self._dist(observations)
        return dist.mean if deterministic else dist.sample()

    def evaluate_actions(self, observations: dict[str, th.Tensor], actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        dist = self._dist(observations)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)


class TinyVLA(TinyActor):
    """The full interface: a value head on the encoder."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.critic = nn.Linear(self.head.in_features, 1)

    def get_value(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return self.critic(self.encoder(observations["obs"]))


class TinyEmbedVLA(TinyActor):
    """No ``get_value``; ``embed`` gives the encoder features."""

    def embed(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return self.encoder(observations["obs"])


class NoEvaluate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 1)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return self.head(observations["obs"])


class ColumnLogProb(TinyVLA):
    """A common slip: log-prob of shape (B, 1)."""

    def evaluate_actions(self, observations, actions):
        log_prob, entropy = super().evaluate_actions(observations, actions)
        return log_prob[:, None], entropy


class MeanOnly(TinyVLA):
    """``forward`` without ``deterministic`` that returns the mean: PPO would never explore."""

    def forward(self, observations):  # type: ignore[override]
        return self._dist(observations).mean


class Bf16VLA(TinyVLA):
    """A bfloat16 module (as large VLAs are run): its outputs must reach SB3 as float32."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.to(th.bfloat16)

    def _dist(self, observations):
        return super()._dist({"obs": observations["obs"].to(th.bfloat16)})

    def evaluate_actions(self, observations, actions):
        return super().evaluate_actions(observations, actions.to(th.bfloat16))

    def get_value(self, observations):
        return super().get_value({"obs": observations["obs"].to(th.bfloat16)})


def dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def save_ckpt(path: Path, cls: type = TinyVLA, seed: int = 0, key: str = "model_state_dict", **config) -> Path:
    th.manual_seed(seed)
    th.save({key: cls(**config).state_dict(), "epoch": 3}, path)
    return path


def make_ppo(
    tmp_path: Path, cls: type = TinyVLA, freeze=("encoder",), lr: float = 1e-3, device: str = "cpu", **config
) -> PPO:
    ckpt = save_ckpt(tmp_path / "vla.pt", cls, **config)
    kwargs = dict(model_class=dotted(cls), model_path=str(ckpt), model_config=config, freeze=list(freeze))
    return PPO(
        VLAActorCriticPolicy, "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, learning_rate=lr, seed=0,
        policy_kwargs=kwargs, device=device,
    )  # fmt: skip


def obs_batch(n: int = 8, seed: int = 0) -> th.Tensor:
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-np.pi, np.pi, n)
    return th.as_tensor(np.stack([np.cos(angle), np.sin(angle), rng.uniform(-8, 8, n)], 1), dtype=th.float32)


def snapshot(module: nn.Module) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_exported_from_policies_and_docstring_examples():
    assert ExportedPolicy is VLAActorCriticPolicy
    assert doctest.testmod(finetune_policy).failed == 0


def test_ppo_uses_the_modules_own_action_value_log_prob_and_entropy(tmp_path):
    model = make_ppo(tmp_path, lr=0.0)  # lr 0: the stored rollout is the current policy's
    vla = model.policy.vla
    assert isinstance(vla, TinyVLA) and model.policy.value_head is None
    model.learn(64)
    buf = model.rollout_buffer
    obs = th.as_tensor(buf.observations.reshape(-1, 3))
    actions = th.as_tensor(buf.actions.reshape(-1, 1))
    with th.no_grad():
        log_prob, entropy = vla.evaluate_actions({"obs": obs}, actions)
        values = vla.get_value({"obs": obs})
        p_values, p_log_prob, p_entropy = model.policy.evaluate_actions(obs, actions)
    np.testing.assert_allclose(buf.log_probs.reshape(-1), log_prob.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buf.values.reshape(-1), values.numpy().reshape(-1), rtol=1e-5, atol=1e-6)
    assert th.equal(p_log_prob, log_prob) and th.equal(p_entropy, entropy) and th.equal(p_values, values)
    # deterministic predict is the module's mean; PPO explored around it (log-std exp(-0.5) = 0.61)
    with th.no_grad():
        mean = vla({"obs": obs}, deterministic=True)
    pred, _ = model.predict(obs.numpy(), deterministic=True)
    np.testing.assert_allclose(pred, np.clip(mean.numpy(), -2, 2), rtol=1e-6)
    assert 0.3 < float((actions - mean).std()) < 1.0


def test_frozen_weights_and_buffers_bit_identical_head_moves(tmp_path):
    model = make_ppo(tmp_path, batch_norm=True)
    vla = model.policy.vla
    enc0, head0, std0, critic0 = (snapshot(m) for m in (vla.encoder, vla.head, vla, vla.critic))
    opt_params = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in vla.encoder.parameters())
    model.learn(192)
    assert model.policy.training and not vla.encoder.training and vla.head.training  # frozen part stays in eval
    after = snapshot(vla.encoder)
    assert set(after) == set(enc0) and "1.running_mean" in after  # BatchNorm statistics included
    assert all(th.equal(after[k], enc0[k]) for k in enc0)
    assert not th.equal(vla.head.weight, head0["weight"])
    assert not th.equal(vla.log_std, std0["log_std"]) and not th.equal(vla.critic.weight, critic0["weight"])


def test_value_head_on_embed_when_module_has_no_get_value(tmp_path):
    with pytest.warns(UserWarning, match=r"no get_value.*MLP \[64, 64\] -> 1 on embed\(observations\) \(16 inputs"):
        model = make_ppo(tmp_path, TinyEmbedVLA)
    policy, vla = model.policy, model.policy.vla
    obs = obs_batch()
    with th.no_grad():
        expected = policy.value_head(vla.embed({"obs": obs}))
        assert th.equal(policy.predict_values(obs), expected)
    head0 = snapshot(policy.value_head)
    model.learn(128)
    assert not th.equal(policy.value_head[0].weight, head0["0.weight"])
    log_prob, entropy = vla.evaluate_actions({"obs": obs}, th.zeros(8, 1))
    _, p_log_prob, p_entropy = policy.evaluate_actions(obs, th.zeros(8, 1))
    assert th.equal(p_log_prob, log_prob) and th.equal(p_entropy, entropy)


def test_value_head_on_observation_without_embed(tmp_path):
    ckpt = save_ckpt(tmp_path / "a.pt", TinyActor)
    with pytest.warns(UserWarning, match=r"on the flattened observation \(3 inputs\)"):
        policy = VLAActorCriticPolicy(
            gym.make("Pendulum-v1").observation_space, gym.make("Pendulum-v1").action_space, lambda _: 1e-3,
            model_class=dotted(TinyActor), model_path=str(ckpt), net_arch=[8],
        )  # fmt: skip
    assert policy.predict_values(obs_batch()).shape == (8, 1)
    assert [m.out_features for m in policy.value_head if isinstance(m, nn.Linear)] == [8, 1]


def test_load_vla_model_reads_model_state_dict_with_weights_only(tmp_path):
    ckpt = save_ckpt(tmp_path / "vla.pt", seed=3)
    th.manual_seed(3)
    ref = TinyVLA()
    model = load_vla_model(ckpt, dotted(TinyVLA))
    assert not model.training and all(
        th.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values())
    )


def test_clear_errors(tmp_path):
    space = gym.make("Pendulum-v1")
    args = (space.observation_space, space.action_space, lambda _: 1e-3)
    with pytest.raises(ValueError, match=r"has no key 'model_state_dict' \(found \['epoch', 'state_dict'\]\)"):
        load_vla_model(save_ckpt(tmp_path / "k.pt", key="state_dict"), dotted(TinyVLA))
    wide = save_ckpt(tmp_path / "wide.pt", hidden=32)
    with pytest.raises(
        ValueError, match=r"shape mismatch .*encoder\.0\.weight: checkpoint \(32, 3\), module \(16, 3\)"
    ):
        load_vla_model(wide, dotted(TinyVLA), {"hidden": 16})
    with pytest.raises(ValueError, match="missing keys \\['critic.bias', 'critic.weight'\\]"):
        load_vla_model(save_ckpt(tmp_path / "actor.pt", TinyActor), dotted(TinyVLA))
    with pytest.raises(ValueError, match="does not exist"):
        load_vla_model(tmp_path / "nope.pt", dotted(TinyVLA))
    with pytest.raises(TypeError, match="has no evaluate_actions"):
        VLAActorCriticPolicy(*args, model_class=dotted(NoEvaluate))
    with pytest.raises(ValueError, match=r"log_prob must have shape \(2,\), got a tensor of shape \(2, 1\)"):
        VLAActorCriticPolicy(*args, model_class=dotted(ColumnLogProb))
    with pytest.raises(ValueError, match=r"no submodule 'vision'; its submodules are \['encoder', 'head', 'critic'\]"):
        VLAActorCriticPolicy(*args, model_class=dotted(TinyVLA), freeze=["vision"])
    with pytest.raises(ValueError, match=r"returned actions of shape \(2, 2\).*needs \(2, 1\)"):
        VLAActorCriticPolicy(*args, model_class=dotted(TinyVLA), model_config={"action_dim": 2})
    with pytest.raises(ValueError, match="needs policy_kwargs=dict\\(model_class="):
        VLAActorCriticPolicy(*args)
    with pytest.warns(UserWarning, match="same action twice"):
        VLAActorCriticPolicy(*args, model_class=dotted(MeanOnly))


def test_save_load_round_trip_saves_only_what_changed(tmp_path):
    model = make_ppo(tmp_path)
    model.learn(64)
    model.save(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as z:
        z.extract("policy.pth", tmp_path)
    saved = th.load(tmp_path / "policy.pth", weights_only=True)
    assert FROZEN_DIGEST_KEY in saved and not any(k.startswith("vla.encoder.") for k in saved)
    assert {"vla.head.weight", "vla.log_std", "vla.critic.weight"} <= set(saved)

    loaded = PPO.load(tmp_path / "m.zip", device="cpu")
    assert isinstance(loaded.policy, VLAActorCriticPolicy) and loaded.policy.freeze == ["encoder"]
    assert loaded.policy_kwargs["model_class"] == dotted(TinyVLA)  # plain data in the zip
    obs = obs_batch(16).numpy()
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    for k, v in model.policy.state_dict().items():
        assert th.equal(v, loaded.policy.state_dict()[k]), k

    # the sb3_vla checkpoint (--resume) round trip, and a policy saved alone
    path = save_checkpoint(model, tmp_path / "ckpts")
    (tmp_path / "other").mkdir()
    fresh = make_ppo(tmp_path / "other")  # same checkpoint contents, another file
    load_checkpoint(fresh, path)
    assert np.array_equal(fresh.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    model.policy.save(str(tmp_path / "policy_alone.pt"))
    alone = VLAActorCriticPolicy.load(str(tmp_path / "policy_alone.pt"))
    assert np.array_equal(alone.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])

    # evaluation on a machine where the checkpoint lives elsewhere
    (tmp_path / "vla.pt").rename(tmp_path / "moved.pt")
    moved = dict(loaded.policy_kwargs, model_path=str(tmp_path / "moved.pt"))
    elsewhere = PPO.load(tmp_path / "m.zip", device="cpu", custom_objects={"policy_kwargs": moved})
    assert np.array_equal(elsewhere.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])

    save_ckpt(tmp_path / "vla.pt", seed=1)  # the frozen encoder's checkpoint changed under the saved model
    with pytest.raises(ValueError, match="frozen-weights digest mismatch"):
        PPO.load(tmp_path / "m.zip", device="cpu")


def test_train_cli_and_resume(tmp_path):
    from sb3_vla.train import main

    ckpt = save_ckpt(tmp_path / "vla.pt")
    conf = tmp_path / "ppo.yml"
    conf.write_text(yaml.safe_dump({"Pendulum-v1": {"n_timesteps": 128, "n_steps": 64, "batch_size": 32}}))
    kwargs = f"dict(model_class='{dotted(TinyVLA)}', model_path='{ckpt}', freeze=['encoder'])"
    common = ["--eval-freq", "0", "--save-freq", "0", "--no-progress", "--verbose", "0", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        main(["--algo", "ppo", "--env", "Pendulum-v1", "--conf-file", str(conf), "-f", str(tmp_path / "logs"),
              "-params", "policy:sb3_vla.policies.VLAActorCriticPolicy", f"policy_kwargs:{kwargs}",
              "learning_rate:0.001", *common])  # fmt: skip
        run = tmp_path / "logs" / "ppo" / "Pendulum-v1_1"
        model = PPO.load(run / "Pendulum-v1.zip", device="cpu")
        assert isinstance(model.policy, VLAActorCriticPolicy) and model.num_timesteps == 128
        th.manual_seed(0)
        ref = TinyVLA()
        assert th.equal(model.policy.vla.encoder[0].weight, ref.encoder[0].weight)  # frozen: as in the checkpoint
        assert not th.equal(model.policy.vla.head.weight, ref.head.weight)
        main(["--resume", str(run), "-n", "256", *common])
    meta = load_checkpoint(PPO.load(run / "Pendulum-v1.zip", device="cpu"), latest_checkpoint(run / "checkpoints"))
    assert meta["num_timesteps"] == 256


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")
def test_learns_and_round_trips_on_cuda(tmp_path):
    model = make_ppo(tmp_path, device="cuda")
    enc0 = snapshot(model.policy.vla.encoder)
    model.learn(128)
    assert model.policy.vla.head.weight.is_cuda
    assert all(th.equal(v, enc0[k]) for k, v in model.policy.vla.encoder.state_dict().items())
    model.save(tmp_path / "m.zip")
    obs = obs_batch().numpy()
    loaded = PPO.load(tmp_path / "m.zip", device="cuda")
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_bfloat16_module_trains(tmp_path):
    model = make_ppo(tmp_path, Bf16VLA)
    head0 = model.policy.vla.head.weight.detach().clone()
    model.learn(128)
    assert model.rollout_buffer.log_probs.dtype == np.float32 and np.isfinite(model.rollout_buffer.values).all()
    assert model.policy.vla.head.weight.dtype == th.bfloat16 and not th.equal(model.policy.vla.head.weight, head0)
