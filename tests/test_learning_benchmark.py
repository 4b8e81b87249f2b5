"""benchmarks/learning.py end to end with a tiny budget, so the learning benchmark cannot rot."""

import csv

import numpy as np
import pytest

from benchmarks import learning


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_learning_benchmark_tiny_pendulum(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    argv = [
        "--env", "Pendulum-v1", "--algo", "sac", "--seeds", "1", "--steps", "200", "--eval-every", "100",
        "--eval-episodes", "1", "--arms", "base,residual,emb_only", "--out", str(tmp_path),
        "--results-md", str(results_md),
    ]  # fmt: skip
    summary = learning.main(argv)

    csv_path, png_path = tmp_path / "Pendulum-v1_sac.csv", tmp_path / "Pendulum-v1_sac.png"
    rows = _rows(csv_path)
    assert list(rows[0]) == learning.FIELDS
    by_arm: dict[str, dict[int, float]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[int(r["step"])] = float(r["metric"])
    assert set(by_arm) == {"base", "residual", "emb_only"}
    for arm in by_arm:
        assert sorted(by_arm[arm]) == [0, 100, 200], arm
    # the residual head starts at zero and the evaluation is re-seeded: step 0 of a residual arm is the base
    assert by_arm["residual"][0] == pytest.approx(by_arm["base"][0], abs=1e-3)
    assert by_arm["emb_only"][0] == pytest.approx(by_arm["base"][0], abs=1e-3)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = results_md.read_text()
    assert "<!-- BEGIN learning_Pendulum-v1_sac -->" in text and "<!-- END learning_Pendulum-v1_sac -->" in text
    for arm in ("base", "residual", "emb_only"):
        assert f"| {learning.ARM_TITLES[arm]} | 1 | 200 |" in text, arm
    assert summary["residual"]["complete"] and summary["base"]["final"] == pytest.approx(by_arm["base"][200])

    # a re-run skips the finished (arm, seed) pairs and leaves the curves as they were
    learning.main(argv)
    assert _rows(csv_path) == rows

    # the critic probe reads the run's last checkpoint (at 100 env steps) and rolls out its deterministic policy
    from benchmarks import critic_probe

    setup = learning.make_setup("Pendulum-v1", "sac")
    ckpt = learning.pair_checkpoint_dir(csv_path, "residual", 0)
    result = critic_probe.probe(setup, ckpt, seed=0, episodes=1)
    assert result["env_steps"] == 100 and result["oracle"] is None
    assert result["residual"].shape == (200, 1) and np.all(np.abs(result["residual"]) <= 1.0)
    assert result["margin"].shape == (200,) and np.isfinite(result["margin"]).all()
    assert result["std"].shape == (200, 1) and np.all(result["std"] > 0) and result["oracle_line"] == {}
    assert "checkpoint at 100 env steps; 1 deterministic episodes, 200 decisions" in critic_probe.report(result, 1)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        critic_probe.probe(setup, tmp_path / "none", seed=0, episodes=1)


def test_summary_statistics():
    curves = {
        ("base", 0): {0: 50.0, 10: 50.0},
        ("base", 1): {0: 40.0, 10: 40.0},
        ("residual", 0): {0: 50.0, 5: 40.0, 10: 80.0},
        ("residual", 1): {0: 40.0, 5: 70.0, 10: 90.0},
    }
    s = learning.summarise(curves, steps=10, margin=20.0)
    assert s["base"]["final"] == pytest.approx(45.0)
    assert s["residual"]["final"] == pytest.approx(85.0)
    # paired per seed: seed 0's base is 50, seed 1's is 40
    assert s["residual"]["gain"] == pytest.approx(40.0)
    assert s["residual"]["reach"] == [10, 5]  # first eval >= that seed's base + 20
    assert s["residual"]["dip_seed"] == pytest.approx(10.0) and s["residual"]["dip_mean"] == pytest.approx(0.0)
    assert learning.iqm([0, 1, 2, 3, 100, 4, 5, 6]) == pytest.approx(3.5)


def test_residual_overrides_and_variant_tag(tmp_path):
    assert learning.parse_scale("0.3") == 0.3
    assert learning.parse_scale("0.005*60,0.3") == (0.005,) * 60 + (0.3,)
    assert learning.parse_scale("0.05*2:0.25*2:100") == {"start": (0.05, 0.05), "end": (0.25, 0.25), "steps": 100}
    with pytest.raises(ValueError, match="START:END:STEPS"):
        learning.parse_scale("0.05:0.25")
    assert learning._scale_note({"start": 0.05, "end": 0.25, "steps": 100}) == "0.05 -> 0.25 over 100 env steps"
    # the schedule reaches the residual arm's env: 0.1 at step 0, half-way at 50 env steps
    from sb3_vla.experiment import set_schedule_step

    ramp = learning.make_setup("Pendulum-v1", "sac", residual_scale="0.1:0.5:100")
    venv = learning._make_env(ramp, "residual", 1, 0, "dummy")
    assert float(venv.residual_scale) == pytest.approx(0.1)
    set_schedule_step(venv, 50)
    assert float(venv.residual_scale) == pytest.approx(0.3)
    venv.close()
    # GarmentFold composes its residual through the pinch-point map by default; 'none' goes back to joint space
    setup = learning.make_setup("GarmentFold-v0", "sac")
    assert setup.residual_map == learning.GARMENT_PINCH_MAP and len(setup.residual_scale) == 7
    assert setup.actor_warmup == 5000  # critic burn-in for the residual arms
    joint = learning.make_setup("GarmentFold-v0", "sac", residual_map="none", residual_scale="0.005*60,0.3")
    assert joint.residual_map is None and joint.residual_scale == learning.GARMENT_JOINT_RESIDUAL_SCALE
    # a tag names a variant's CSV, plot and RESULTS.md section
    args = learning.parse_args(["--env", "GarmentFold-v0", "--tag", "joint", "--out", str(tmp_path)])
    assert args.csv == tmp_path / "GarmentFold-v0_sac_joint.csv" and args.section == "learning_GarmentFold-v0_sac_joint"
    # the embedding-only arm keeps the base's action in the map's space: it is the base's, not the env's
    keys = ["joint_pos", "keypoints", "pinch_pos", "vla_action", "vla_action_mapped", "vla_embedding"]
    assert learning._excluded_keys(setup, "emb_only", keys) == ["joint_pos", "keypoints", "pinch_pos"]
    assert learning._excluded_keys(setup, "residual", keys) == ["vla_embedding"]
    # --residual-map takes a map with arguments as YAML; --ignore-keys hides more keys from every arm's policy
    view = learning.make_setup(
        "GarmentFold-v0",
        "sac",
        residual_map='{"sb3_vla.envs.garment_fold:PinchResidualMap": {"targets_key": task_points}}',
        ignore_keys=["joint_pos", "vla_action"],
    )
    assert view.residual_map == {learning.GARMENT_PINCH_MAP: {"targets_key": "task_points"}}
    assert learning._excluded_keys(view, "residual", keys) == ["joint_pos", "vla_action", "vla_embedding"]
    assert "PinchResidualMap(targets_key='task_points')" in learning._dims_note(view)
    # gSDE held for an episode: train_freq as rl-zoo's YAML list becomes SB3's tuple; --policy-kwargs reach only
    # the residual arms' policy (scratch stays stock SAC)
    sde = learning.make_setup(
        "Pendulum-v1",
        "sac",
        hyperparams=["use_sde:true", "train_freq:[1,episode]", "gradient_steps:-1"],
        policy_kwargs=["log_std_init:-1"],
    )
    assert sde.sac_kwargs["train_freq"] == (1, "episode") and sde.policy_kwargs == {"log_std_init": -1}
    env = learning._make_env(sde, "residual", 1, 0, "dummy")
    model = learning._make_model(sde, "residual", "sac", env, 0)
    assert model.use_sde and model.train_freq.unit.value == "episode"
    assert np.allclose(model.actor.log_std.detach().numpy(), -1.0)
    # the probe's exploration width with gSDE: the spread of latent @ noise over noise draws at one state
    from benchmarks import critic_probe

    obs = model.policy.obs_to_tensor(env.reset())[0]
    width = critic_probe._pre_tanh_std(model.actor, obs)
    latent = model.actor.get_action_dist_params(obs)[2]["latent_sde"]
    draws = []
    for _ in range(2000):
        model.actor.reset_noise()
        draws.append(model.actor.action_dist.get_noise(latent)[0, 0].item())
    assert width.shape == (1,) and width[0] == pytest.approx(np.std(draws), rel=0.1)
    scratch = learning._make_model(sde, "scratch", "sac", learning._make_env(sde, "scratch", 1, 0, "dummy"), 0)
    assert np.allclose(scratch.actor.log_std.detach().numpy(), -3.0)  # SB3's default


def test_maniskill_targets_read_the_mean_curves_against_scratch():
    curves = {
        ("base", 0): {0: 35.0, 4000: 35.0, 8000: 35.0},
        ("residual", 0): {0: 35.0, 4000: 60.0, 8000: 90.0},
        ("scratch", 0): {0: 0.0, 4000: 70.0, 8000: 80.0},
    }
    setup = learning.env_setup("ManiSkill-PushCube-v1")
    text = "\n".join(learning.targets(learning.summarise(curves, 8000, setup.margin), setup))
    assert "- >= 85% within 100k env steps (mean curve): MET (first at 8000 env steps)." in text
    assert "up to 50k: NOT MET (3 shared evaluations; level or behind at 4000)." in text
    assert "worst seed 0, mean curve 0." in text
    del curves[("scratch", 0)]
    curves[("residual", 0)][8000] = 80.0
    text = "\n".join(learning.targets(learning.summarise(curves, 8000, setup.margin), setup))
    assert "NOT MET (best 80% in 8000 steps; the 100k-step budget was not run)" in text
    assert "not checkable (no scratch arm)" in text


def test_gated_arm_is_the_residual_runs_evaluated_with_the_critic_gate(tmp_path):
    common = ["--env", "Pendulum-v1", "--algo", "sac", "--seeds", "1", "--steps", "400", "--eval-every", "200",
              "--eval-episodes", "1", "--recipe", "actor_warmup:0"]  # fmt: skip
    plain_md = str(tmp_path / "plain.md")
    learning.main([*common, "--arms", "residual", "--out", str(tmp_path / "plain"), "--results-md", plain_md])
    learning.main([*common, "--arms", "base,residual,residual_gated", "--out", str(tmp_path), "--results-md",
                   str(tmp_path / "RESULTS.md")])  # fmt: skip
    curves = learning.read_curves(tmp_path / "Pendulum-v1_sac.csv")
    plain = learning.read_curves(tmp_path / "plain" / "Pendulum-v1_sac.csv")
    # one training: the ungated evaluations are those of a run without the gated arm
    assert curves[("residual", 0)] == plain[("residual", 0)]
    assert sorted(curves[("residual_gated", 0)]) == [0, 200, 400]
    # a zero residual head keeps the base whichever way the gate goes
    assert curves[("residual_gated", 0)][0] == pytest.approx(curves[("base", 0)][0], abs=1e-3)
    assert curves[("residual_gated", 0)] != curves[("residual", 0)]  # the gate changed some deterministic actions
    assert f"| {learning.ARM_TITLES['residual_gated']} | 1 | 400 |" in (tmp_path / "RESULTS.md").read_text()
    for arms in ("base,residual_gated", "residual,residual_gated"):
        algo = "ppo" if arms.startswith("residual,") else "sac"
        with pytest.raises(SystemExit):
            learning.parse_args(["--env", "Pendulum-v1", "--algo", algo, "--arms", arms])
