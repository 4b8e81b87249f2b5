"""SmallVLA (issue 5): the shipped weights as a base, the pretrain command end to end, frozen-encoder fine-tuning.

The pretraining lives in :mod:`sb3_vla.envs.garment_fold.pretrain`; ``sb3_vla.pretrain`` is its deprecated alias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest
import torch as th

import sb3_vla  # noqa: F401 - registers GarmentFold-v0
from sb3_vla.bases import make_base
from sb3_vla.bases.base import VLABatch
from sb3_vla.models import SHIPPED
from sb3_vla.models.small_vla import FALLBACK_ID, SmallVLA, instruction_ids, load_small_vla

SHIPPED_PT = SHIPPED["garment_fold"]


@pytest.fixture(scope="module")
def env() -> Any:
    e = gym.make("GarmentFold-v0", rgb_obs=True, image_size=128)
    yield e
    e.close()


def _batch(env: Any, n_steps: int = 0) -> VLABatch:
    obs, info = env.reset(seed=3)
    for _ in range(n_steps):
        obs, _, _, _, info = env.step(env.unwrapped.scripted_action())
    return VLABatch(
        obs={k: np.asarray(v)[None] for k, v in obs.items()},
        instructions=[info["instruction"]],
        env_ids=np.zeros(1, dtype=np.int64),
    )


def test_shipped_weights_load_and_act(env: Any) -> None:
    assert SHIPPED_PT.is_file(), "the shipped weights sb3_vla/assets/garment_fold_vla.pt are missing"
    assert SHIPPED_PT.stat().st_size < 20e6
    assert SHIPPED_PT.with_suffix(".md").is_file(), "the model card garment_fold_vla.md is missing"
    base = make_base("small-vla:garment_fold", env.observation_space, env.action_space)
    model = load_small_vla(SHIPPED_PT)
    assert base.action_space is not None and base.action_space.shape == (61,)
    assert base.chunk_size == model.exec_horizon and base.embedding_dim == model.embedding_dim
    assert set(base.obs_keys) == {"rgb", *model.state_keys}
    action, emb = base.predict(_batch(env, n_steps=2))
    assert action.shape == (1, model.exec_horizon, 61) and np.all(np.isfinite(action))
    assert np.all(action[..., :60] >= -1) and np.all(action[..., :60] <= 1)
    assert np.all((action[..., 60] >= 0) & (action[..., 60] <= 1))
    assert emb is not None and emb.shape == (1, model.embedding_dim) and np.all(np.isfinite(emb))
    if model.snap_on.item():  # each hand outputs one of its demonstrated postures
        for group, values in zip(model.snap_groups, model.snap_values.numpy()):
            for hand in action[0][:, group]:
                assert np.min(np.abs(values - hand).max(axis=1)) < 1e-6

    # the generic module: spec loads the same file (the model's defaults match the shipped config)
    spec = f"module:sb3_vla.models.small_vla.SmallVLA@{SHIPPED_PT}?instruction_key=instruction"
    generic = make_base(spec, env.observation_space, env.action_space)
    action2, emb2 = generic.predict(_batch(env, n_steps=2))
    np.testing.assert_allclose(action2, action, atol=1e-5)
    np.testing.assert_allclose(emb2, emb, atol=1e-5)


def test_shipped_base_batched_and_exec_horizon(env: Any) -> None:
    base = make_base("small-vla:garment_fold?exec_horizon=1", env.observation_space, env.action_space)
    one = _batch(env)
    batch = VLABatch(
        obs={k: np.repeat(v, 8, axis=0) for k, v in one.obs.items()},
        instructions=one.instructions * 8,
        env_ids=np.arange(8),
    )
    action, emb = base.predict(batch)
    assert action.shape == (8, 1, 61) and emb is not None and emb.shape[0] == 8
    np.testing.assert_allclose(action, np.repeat(action[:1], 8, axis=0), atol=1e-5)


def test_small_vla_rejects_env_without_rgb() -> None:
    e = gym.make("GarmentFold-v0")
    try:
        with pytest.raises(ValueError, match="rgb_obs=True"):
            make_base("small-vla:garment_fold", e.observation_space, e.action_space)
        with pytest.raises(ValueError, match="not found"):
            make_base("small-vla:/nonexistent/weights.pt", e.observation_space, e.action_space)
    finally:
        e.close()


def test_instruction_ids_and_stage_fallback() -> None:
    vocab = ("a", "b")
    assert instruction_ids(["b", "A ", "zzz"], 3, vocab).tolist() == [1, 0, 2]
    assert instruction_ids(None, 2, vocab).tolist() == [2, 2]
    th.manual_seed(0)
    model = SmallVLA().eval()
    obs: dict[str, Any] = {
        "rgb": th.zeros(2, 128, 128, 3, dtype=th.uint8),
        "joint_pos": th.zeros(2, 60),
        "joint_vel": th.zeros(2, 60),
        "held": th.zeros(2, 2),
        "stage": th.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        "keypoints": th.zeros(2, 24),
    }
    with th.inference_mode():
        from_stage = model(obs)  # no instruction strings: the stage one-hot names them
        named = model({**obs, "instruction": list(model.vocab[1:3])})
        unknown = model({**obs, "instruction": ["do a dance", "?"]})
    assert model._text_ids({**obs, "instruction": ["do a dance"]}, 1).tolist() == [FALLBACK_ID]
    th.testing.assert_close(from_stage, named)
    assert not th.allclose(unknown, named)


def test_snap_outputs_the_allowed_hand_targets(tmp_path: Path) -> None:
    from sb3_vla.models.small_vla import save_small_vla

    th.manual_seed(0)
    open_, pinch = [-0.5] * 3, [0.25] * 3
    model = SmallVLA(snap_groups=[[1, 2, 3]]).eval()
    obs: dict[str, Any] = {
        "rgb": th.randint(0, 255, (4, 128, 128, 3), dtype=th.uint8),
        "joint_pos": th.rand(4, 60) * 2 - 1,
        "joint_vel": th.zeros(4, 60),
        "held": th.zeros(4, 2),
        "stage": th.eye(3)[[0, 1, 2, 0]],
        "keypoints": th.zeros(4, 24),
    }
    with th.inference_mode():
        unsnapped = model.predict_chunk(obs)  # off until set_snap
        model.set_snap([[open_, pinch]])
        chunk = model.predict_chunk(obs)
    hand = chunk[..., 1:4]
    assert all(h.tolist() in (open_, pinch) for h in hand.reshape(-1, 3))
    near_pinch = (unsnapped[..., 1:4] - th.tensor(pinch)).norm(dim=-1) < (unsnapped[..., 1:4] - th.tensor(open_)).norm(
        dim=-1
    )
    th.testing.assert_close(hand, th.where(near_pinch.unsqueeze(-1), th.tensor(pinch), th.tensor(open_)))
    rest = [0, *range(4, 61)]
    th.testing.assert_close(chunk[..., rest], unsnapped[..., rest])
    # the allowed vectors are buffers: they travel with the weights, also into a default-built model (module: spec)
    save_small_vla(model, tmp_path / "m.pt")
    with th.inference_mode():
        th.testing.assert_close(load_small_vla(tmp_path / "m.pt").eval().predict_chunk(obs), chunk)
    assert SmallVLA().snap_groups == [list(range(6, 30)), list(range(36, 60))]
    with pytest.raises(ValueError, match="snap group 0"):
        model.set_snap([[open_, pinch, open_]])  # more than snap_count vectors


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    from sb3_vla.envs.garment_fold.pretrain import main

    out = tmp_path_factory.mktemp("pretrain")
    work = out / "work"
    args = ["--env", "GarmentFold-v0", "--demos", "2", "--epochs", "1", "--eval-episodes", "1"]
    args += ["--max-episode-steps", "8", "--workers", "1", "--keep-failed", "--batch-size", "8"]
    args += ["--out", str(out), "--name", "tiny", "--work-dir", str(work), "--action-noise", "0.01"]
    args += ["--dagger-rounds", "1", "--dagger-episodes", "2", "--dagger-epochs", "1", "--dagger-beta", "0.5"]
    args += ["--dagger-eval-episodes", "1"]
    meta = main(args)
    return out, work, meta


def test_pretrain_end_to_end(tiny_run: tuple[Path, Path, dict[str, Any]], env: Any) -> None:
    out, _, meta = tiny_run
    weights, card = out / "tiny.pt", out / "tiny.md"
    assert weights.is_file() and card.is_file()
    assert meta["demos"] == 2 and meta["episodes_trained"] == 2 and meta["steps_trained"] == 16
    assert meta["demo_action_noise"] == 0.01
    assert meta["eval_episodes"] == 1 and meta["eval_successes"] in (0, 1)
    assert meta["parameters"] == meta["trainable_parameters"] > 0
    text = card.read_text()
    for needle in ("## Architecture", "## Data", "## Training", "## Evaluation", "parameters", "seeds"):
        assert needle in text
    # normalisation statistics come from the data, and the file is a base
    model = load_small_vla(weights)
    assert not th.allclose(model.state_std, th.ones_like(model.state_std))
    base = make_base(f"small-vla:{weights}", env.observation_space, env.action_space)
    action, emb = base.predict(_batch(env))
    assert np.all(np.isfinite(action)) and emb is not None and np.all(np.isfinite(emb))


def test_pretrain_dagger_round(tiny_run: tuple[Path, Path, dict[str, Any]]) -> None:
    """One DAgger round: the model's rollouts are saved with the scripted folder's label of every visited state."""
    from sb3_vla.envs.garment_fold.pretrain import DAGGER_OFFSET

    out, work, meta = tiny_run
    dagger = meta["dagger"]
    assert dagger["rounds"] == 1 and dagger["episodes_per_round"] == 2 and dagger["beta"] == 0.5
    assert [r["round"] for r in dagger["per_round"]] == [1]
    rnd = dagger["per_round"][0]
    assert rnd["rollout_episodes"] == 2 and rnd["rollout_successes"] in (0, 1, 2)
    assert rnd["rollout_seeds"] == [DAGGER_OFFSET + 1000, DAGGER_OFFSET + 1001]
    assert dagger["val_episodes"] == 1 and dagger["val_successes_bc"] in (0, 1) and rnd["val_successes"] in (0, 1)
    assert dagger["steps"] == 16 and dagger["aggregate_steps"] == meta["steps_trained"] + 16
    assert load_small_vla(out / "tiny.pt") is not None and "## DAgger" in (out / "tiny.md").read_text()
    files = sorted((work / "dagger").glob("ep_*_r1_*.npz"))
    assert [f.name.rsplit("_", 1)[1] for f in files] == [f"{DAGGER_OFFSET + 1000}.npz", f"{DAGGER_OFFSET + 1001}.npz"]
    # replay each rollout: executing the recorded actions, the folder labels the same states with the same actions
    # as pretrain labels: the folder judges by the measured hands (the executed actions are not its corrections)
    e = gym.make("GarmentFold-v0", scripted_noise=0.01, scripted_command_frame=False, max_episode_steps=8)
    try:
        n_expert = 0
        for f, seed in zip(files, rnd["rollout_seeds"]):
            ep = dict(np.load(f))
            assert ep["rgb"].shape == (8, 128, 128, 3) and ep["keypoints"].shape == (8, 24)
            assert ep["action"].shape == ep["executed"].shape == (8, 61) and ep["instruction"].shape == (8,)
            assert np.all(np.abs(ep["action"][:, :60]) <= 1) and set(np.unique(ep["action"][:, 60])) <= {0.0, 1.0}
            # beta-mixture: the folder's action where it was executed, elsewhere the model's (not the label)
            expert = ep["expert_executed"].astype(bool)
            np.testing.assert_array_equal(ep["executed"][expert], ep["action"][expert])
            assert not np.allclose(ep["action"][~expert], ep["executed"][~expert], atol=1e-3)
            obs, info = e.reset(seed=seed)
            for t in range(8):
                np.testing.assert_allclose(obs["joint_pos"], ep["joint_pos"][t], atol=1e-6)
                cast(Any, e.unwrapped).folder.follow(info["stage_complete"])
                label = cast(Any, e.unwrapped).scripted_action()
                np.testing.assert_allclose(label, ep["action"][t], atol=1e-6)
                obs, _, _, _, info = e.step(ep["executed"][t])
            n_expert += int(expert.sum())
        assert 0 < n_expert < 16  # seeded coin flips at beta 0.5 over 16 steps
    finally:
        e.close()


def test_freeze_encoder_trains_only_the_head(tiny_run: tuple[Path, Path, dict[str, Any]]) -> None:
    from sb3_vla.envs.garment_fold.pretrain import main

    out, work, _ = tiny_run
    init = out / "tiny.pt"
    args = ["--env", "GarmentFold-v0", "--demos", "2", "--epochs", "2", "--eval-episodes", "0"]
    args += ["--max-episode-steps", "8", "--workers", "1", "--keep-failed", "--batch-size", "8", "--lr", "1e-2"]
    args += ["--out", str(out), "--name", "tuned", "--work-dir", str(work), "--action-noise", "0.01"]
    args += ["--freeze-encoder", "--init", str(init), "--dagger-rounds", "1", "--dagger-episodes", "1"]
    args += ["--dagger-eval-episodes", "0"]
    meta = main(args)  # re-uses the demos of the tiny run (same seeds and noise)
    assert meta["freeze_encoder"] and meta["trainable_parameters"] < meta["parameters"]
    assert meta["dagger"]["per_round"][0]["aggregate_steps"] == 24  # the DAgger fine-tune kept the encoder frozen
    before, after = load_small_vla(init).state_dict(), load_small_vla(out / "tuned.pt").state_dict()
    assert before.keys() == after.keys()
    for k in before:
        if k.startswith("head."):
            assert not th.equal(before[k], after[k]), f"head parameter {k} did not change"
        else:
            assert th.equal(before[k], after[k]), f"encoder parameter/buffer {k} changed"
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--freeze-encoder"])  # needs --init


def test_old_pretrain_path_forwards_and_warns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import runpy
    import sys

    import sb3_vla.envs.garment_fold.pretrain as new
    import sb3_vla.pretrain as old

    with pytest.warns(DeprecationWarning, match="sb3_vla.envs.garment_fold.pretrain.main"):
        assert old.main is new.main
    with pytest.warns(DeprecationWarning, match="sb3_vla.envs.garment_fold.pretrain.DAGGER_OFFSET"):
        assert old.DAGGER_OFFSET == new.DAGGER_OFFSET
    with pytest.warns(DeprecationWarning, match="run_jobs"):
        assert old._run_jobs is new.run_jobs  # a private name the benchmarks used
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        old.nope  # noqa: B018
    # the old command runs the new one, with the same flags
    monkeypatch.delitem(sys.modules, "sb3_vla.pretrain")
    monkeypatch.setattr(sys, "argv", ["sb3_vla.pretrain", "--help"])
    with (
        pytest.warns(DeprecationWarning, match="python -m sb3_vla.envs.garment_fold.pretrain"),
        pytest.raises(SystemExit) as exit_info,
    ):
        runpy.run_module("sb3_vla.pretrain", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: python -m sb3_vla.envs.garment_fold.pretrain" in out and "--dagger-rounds" in out
