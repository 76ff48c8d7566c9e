import hashlib
import zipfile

import pytest

from mora_agents.eval import weights
from mora_agents.eval.weights import Checkpoint, MissingWeightsError, WeightStore


def test_resolves_vbench_layout_and_hashes(tmp_path):
    path = tmp_path / "clip_model" / "ViT-B-32.pt"
    path.parent.mkdir()
    path.write_bytes(b"tiny")
    store = WeightStore(tmp_path)
    assert store.path("clip_vit_b32") == path
    assert store.sha256(path) == hashlib.sha256(b"tiny").hexdigest()


def test_missing_file_error_names_file_directory_and_remedy(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        WeightStore(tmp_path).path("raft_things")
    message = str(info.value)
    assert "raft_model/models/raft-things.pth" in message and str(tmp_path) in message
    assert "--weights" in message and "VBENCH_CACHE_DIR" in message and "--download" in message


def test_env_var_sets_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path))
    assert WeightStore().root == tmp_path
    monkeypatch.delenv("VBENCH_CACHE_DIR")
    assert WeightStore().root.parts[-2:] == (".cache", "vbench")


def test_download_only_when_allowed(tmp_path, monkeypatch):
    source = tmp_path / "src.pth"
    source.write_bytes(b"weights")
    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("models/raft-things.pth", b"raft")
    monkeypatch.setitem(
        weights.CHECKPOINTS, "dino_vitb16", Checkpoint("dino_model/dino_vitbase16_pretrain.pth", source.as_uri())
    )
    monkeypatch.setitem(
        weights.CHECKPOINTS,
        "raft_things",
        Checkpoint("raft_model/models/raft-things.pth", archive.as_uri(), "models/raft-things.pth"),
    )
    cache = tmp_path / "cache"
    with pytest.raises(MissingWeightsError):
        WeightStore(cache).path("dino_vitb16")
    store = WeightStore(cache, download=True)
    assert store.path("dino_vitb16").read_bytes() == b"weights"
    assert store.path("raft_things").read_bytes() == b"raft"
    assert sorted(p.name for p in (cache / "raft_model" / "models").iterdir()) == ["raft-things.pth"]
