"""Policy files: round trip, and a clear error for every kind of bad file."""

import json
import pickle
import struct

import numpy as np
import pytest
import torch

from qlr.features import FEATURE_NAMES, FEATURE_VERSION, FEATURES_V2
from qlr.policy import Policy, PolicyFileError, PolicyMetadata, load_policy, save_policy

OBS_DIM = len(FEATURES_V2)  # the rate-only default observation


def _policy(hidden=(8, 8), factors=(0.5, 1.0, 2.0), seed=0, **meta) -> Policy:
    gen = torch.Generator().manual_seed(seed)
    sizes = [OBS_DIM, *hidden, len(factors)]
    layers = [
        (
            torch.randn(sizes[i + 1], sizes[i], generator=gen),
            torch.randn(sizes[i + 1], generator=gen),
        )
        for i in range(len(sizes) - 1)
    ]
    metadata = PolicyMetadata(
        action_factors=factors, decision_interval=5, hidden_sizes=hidden, **meta
    )
    return Policy(layers, metadata)


def test_round_trip_preserves_q_values_and_metadata(tmp_path):
    policy = _policy(obs_mean=(0.1,) * OBS_DIM, obs_std=(2.0,) * OBS_DIM, extra={"seed": 3})
    path = save_policy(policy, tmp_path / "p.qlr")
    loaded = load_policy(path)
    obs = np.random.default_rng(0).uniform(-1, 1, (32, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(loaded.q_values(obs), policy.q_values(obs))
    assert loaded.act(obs[0]) == int(np.argmax(policy.q_values(obs[0])))
    assert (loaded.obs_dim, loaded.n_actions) == (OBS_DIM, 3)
    assert loaded.metadata.extra == {"seed": 3}
    assert loaded.decision_interval == 5


def test_normalisation_is_applied(tmp_path):
    plain = _policy()
    shifted = _policy(obs_mean=(0.5,) * OBS_DIM, obs_std=(1.0,) * OBS_DIM)
    obs = np.full(OBS_DIM, 0.5, dtype=np.float32)
    np.testing.assert_allclose(shifted.q_values(obs), plain.q_values(np.zeros(OBS_DIM)), rtol=1e-6)


def test_file_is_readable_as_plain_safetensors_layout(tmp_path):
    path = save_policy(_policy(), tmp_path / "p.qlr")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert header["layers.0.weight"]["dtype"] == "F32"
    assert json.loads(header["__metadata__"]["qlr"])["feature_version"] == FEATURE_VERSION


def test_save_leaves_no_temporary_files(tmp_path):
    save_policy(_policy(), tmp_path / "p.qlr")
    save_policy(_policy(seed=1), tmp_path / "p.qlr")  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["p.qlr"]


def _rewrite_metadata(path, **changes):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["qlr"])
    meta.update(changes)
    header["__metadata__"]["qlr"] = json.dumps(meta)
    new_header = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + n :])


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.unlink(), "no such file"),
        (lambda p: p.write_bytes(b""), "too short"),
        (lambda p: p.write_bytes(p.read_bytes()[:-7]), "past the end"),
        (lambda p: p.write_bytes(p.read_bytes()[:20]), "past the end"),
        (lambda p: p.write_bytes(b"\x10" + p.read_bytes()[1:]), "JSON"),
        (lambda p: _rewrite_metadata(p, feature_version=FEATURE_VERSION + 1), "feature version"),
        (lambda p: _rewrite_metadata(p, action_factors=[0.5, 2.0]), "shape"),
        (lambda p: _rewrite_metadata(p, action_factors=[0.5, -1.0, 2.0]), "positive"),
        (lambda p: _rewrite_metadata(p, hidden_sizes=[8]), "shape"),
        (lambda p: _rewrite_metadata(p, format="something-else"), "not describe"),
        (lambda p: _rewrite_metadata(p, activation="gelu"), "activation"),
        (lambda p: _rewrite_metadata(p, spike_factor=0.5), "spike_factor"),
        (lambda p: _rewrite_metadata(p, feature_names=["loss_noise", "bogus"]), "feature names"),
        (lambda p: _rewrite_metadata(p, feature_version=1), "feature names"),  # v1 lacks lr_drift
        (lambda p: _rewrite_metadata(p, obs_std=[0.0] * OBS_DIM, obs_mean=[0.0] * OBS_DIM), "std"),
    ],
)
def test_bad_files_fail_with_the_file_name_and_reason(tmp_path, damage, reason):
    path = save_policy(_policy(), tmp_path / "p.qlr")
    damage(path)
    with pytest.raises(PolicyFileError, match=reason) as info:
        load_policy(path)
    assert str(path) in str(info.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.qlr"
    torch.save({"weights": _Payload(str(marker))}, path)
    with pytest.raises(PolicyFileError, match=r"cannot load policy file '.*evil\.qlr': "):
        load_policy(path)
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(PolicyFileError, match=r"cannot load policy file '.*evil\.qlr': "):
        load_policy(path)
    assert not marker.exists()


def test_default_policy_ships_with_the_package():
    policy = load_policy("default")
    assert set(policy.metadata.feature_names) <= set(FEATURE_NAMES) and policy.n_actions >= 3
    assert policy.obs_dim == len(policy.metadata.feature_names)
    assert 0 <= policy.act(np.zeros(policy.obs_dim, dtype=np.float32)) < policy.n_actions


# ---------------------------------------------------------------------------------- writing files
_WRITE_UNDER_UMASK = """
import json, os, stat, sys
from pathlib import Path

os.umask(0o027)
import qlr._atomic as atomic  # reads the umask here, once
from qlr.policy import save_policy
sys.path.insert(0, sys.argv[2])
from conftest import build_policy

calls = []
real_umask = os.umask
os.umask = lambda mask: calls.append(mask) or real_umask(mask)  # count calls from here on
folder = Path(sys.argv[1])
atomic.atomic_write_bytes(folder / "bytes.bin", b"whole")
atomic.atomic_save(folder / "written.bin", lambda f: f.write(b"by a writer"))
save_policy(build_policy(), folder / "p.qlr")
modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
print(json.dumps({"umask_calls": calls, "modes": modes}))
"""


def test_files_are_written_whole_with_the_umask_read_once(tmp_path) -> None:
    # Setting the umask to read it, on every write, would race with threads creating files.
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    out = subprocess.run(
        [sys.executable, "-c", _WRITE_UNDER_UMASK, str(tmp_path), str(tests)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["umask_calls"] == []
    assert result["modes"] == dict.fromkeys(["bytes.bin", "written.bin", "p.qlr"], 0o640)
    assert (tmp_path / "bytes.bin").read_bytes() == b"whole"
    assert (tmp_path / "written.bin").read_bytes() == b"by a writer"
    assert load_policy(tmp_path / "p.qlr").n_actions == 3
    assert not list(tmp_path.glob(".*.tmp"))
