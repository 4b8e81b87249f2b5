"""Untrusted files run no code: a malicious SB3 zip or VecNormalize pickle is refused (its payload never runs) with
a message saying how to opt in, while legitimate zips and ``sb3_vla.train`` run folders load as ``sb3:`` bases."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import TinyDictEnv, train_tiny_sb3
from gymnasium import spaces
from stable_baselines3 import SAC

from sb3_vla.bases import VLABatch, make_base
from sb3_vla.bases.backends.sb3_files import (
    ObsNormalizer,
    UntrustedFileError,
    read_policy_spec,
    space_from_json,
    space_to_json,
    write_policy_spec,
)


class Payload:
    """Unpickling this writes ``marker`` (and returns a plausible value, as a stealthy payload would)."""

    def __init__(self, marker: Path, value: object) -> None:
        self.marker, self.value = marker, value

    def __reduce__(self):
        code = f"[__import__('pathlib').Path({str(self.marker)!r}).write_text('ran'), {self.value!r}][-1]"
        return (eval, (code,))


@pytest.fixture(scope="module")
def legit_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_sb3(tmp_path_factory.mktemp("legit") / "sac", "sac", steps=32)


def _poison_zip(src: Path, dst: Path, key: str, payload: Payload) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(raw)
                blob = base64.b64encode(pickle.dumps(payload)).decode()
                data[key] = {":type:": "<class 'dict'>", ":serialized:": blob}
                raw = json.dumps(data).encode()
            zout.writestr(item, raw)
    return dst


def _batch() -> VLABatch:
    return VLABatch(obs={"state": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)})


@pytest.mark.parametrize("key", ["policy_kwargs", "policy_class", "observation_space"])
def test_malicious_zip_payload_does_not_run(legit_zip: Path, tmp_path: Path, key: str) -> None:
    marker = tmp_path / "pwned"
    bad = _poison_zip(legit_zip, tmp_path / "bad.zip", key, Payload(marker, {"net_arch": [16]}))
    pattern = rf"data entry '{key}' unpickles builtins\.eval.*trust_remote_code=True"
    with pytest.raises(UntrustedFileError, match=pattern):
        make_base(f"sb3:{bad}", device="cpu")
    assert not marker.exists()
    if key == "policy_kwargs":  # the payload is real: SB3's loader (the opt-in) runs it
        make_base(f"sb3:{bad}?trust_remote_code=True", device="cpu")
        assert marker.read_text() == "ran"


def test_payload_in_an_entry_a_policy_does_not_need_is_never_read(legit_zip: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = _poison_zip(legit_zip, tmp_path / "stealthy.zip", "lr_schedule", Payload(marker, 0.0))
    base = make_base(f"sb3:{bad}", device="cpu")
    ref, _ = SAC.load(legit_zip, device="cpu", custom_objects={"lr_schedule": 0.0}).predict(
        _batch().obs, deterministic=True
    )
    np.testing.assert_allclose(base.predict(_batch())[0], ref, atol=1e-6)
    assert not marker.exists()


def test_malicious_vecnormalize_pickle_does_not_run(legit_zip: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    z = run / "model.zip"
    z.write_bytes(legit_zip.read_bytes())
    (run / "vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker, None)))
    with pytest.raises(UntrustedFileError, match=r"vecnormalize\.pkl.*pickle.*vec_normalize=None.*trust_remote_code"):
        make_base(f"sb3:{z}", device="cpu")
    assert not marker.exists()
    base = make_base(f"sb3:{z}?vec_normalize=None", device="cpu")
    assert base.vec_normalize is None


def test_policy_weights_with_pickled_objects_are_refused(legit_zip: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad_weights.zip"
    with zipfile.ZipFile(legit_zip) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "policy.pth":
                import io

                import torch as th

                buf = io.BytesIO()
                th.save({"w": Payload(marker, None)}, buf)
                raw = buf.getvalue()
            zout.writestr(item, raw)
    with pytest.raises(UntrustedFileError, match=r"policy\.pth holds more than tensors.*trust_remote_code"):
        make_base(f"sb3:{bad}", device="cpu")
    assert not marker.exists()


def test_policy_spec_round_trip_and_refusals(legit_zip: Path, tmp_path: Path) -> None:
    policy = SAC.load(legit_zip, device="cpu").policy
    path = write_policy_spec(policy, tmp_path / "policy.json")
    spec = read_policy_spec(path)
    assert spec["policy_class"] is type(policy)
    assert spec["observation_space"] == policy.observation_space and spec["action_space"] == policy.action_space
    assert spec["policy_kwargs"]["net_arch"] == [16]
    data = json.loads(path.read_text())
    data["policy_class"] = "os.system"
    path.write_text(json.dumps(data))
    with pytest.raises(UntrustedFileError, match=r"'os\.system', outside the modules loaded without opt-in"):
        read_policy_spec(path)
    data["policy_class"] = "sb3_vla.checkpoint.save_checkpoint"
    path.write_text(json.dumps(data))
    with pytest.raises(UntrustedFileError, match=r"not a policy, torch module or optimiser class"):
        read_policy_spec(path)
    box = spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, np.inf]), dtype=np.float64)
    nested = spaces.Dict({"a": box, "b": spaces.Discrete(3, start=1), "c": spaces.MultiBinary(4)})
    assert space_from_json(json.loads(json.dumps(space_to_json(nested)))) == nested


def test_vec_normalize_npz_matches_vec_normalize(tmp_path: Path) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from sb3_vla.bases.backends.sb3_files import save_vec_normalize

    venv = VecNormalize(DummyVecEnv([lambda: TinyDictEnv()]), clip_obs=0.5)
    venv.reset()
    for _ in range(20):
        venv.step(np.full((1, 2), 0.5, np.float32))
    norm = ObsNormalizer.load(save_vec_normalize(venv, tmp_path / "vn.npz"))
    obs = {"state": np.random.default_rng(0).uniform(-3, 3, (5, 3)).astype(np.float32)}
    np.testing.assert_allclose(norm.normalize_obs(obs)["state"], venv.normalize_obs(obs)["state"], atol=1e-6)
    assert np.abs(norm.normalize_obs(obs)["state"]).max() <= 0.5
