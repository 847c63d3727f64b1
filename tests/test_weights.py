"""Importing weights saved by others: torchvision-layout .pth files and safetensors."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from convkit.cli import main
from convkit.errors import ConfigError
from convkit.models import create_model
from convkit.models.weights import load_weights, read_state_dict


def saved(tmp_path, name="resnet18", suffix=".pth", wrap=None, **kw):
    torch.manual_seed(1)
    state = create_model(name, **kw).state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path, state


@pytest.mark.parametrize(
    "suffix,wrap", [(".pth", None), (".pth", "state_dict"), (".safetensors", None)]
)
def test_a_checkpoint_loads_unchanged(tmp_path, suffix, wrap):
    path, state = saved(tmp_path, suffix=suffix, wrap=wrap)
    model = create_model("resnet18")
    report = load_weights(model, path)
    assert report.ok and report.matched == len(state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_data_parallel_prefix_is_removed(tmp_path):
    state = create_model("resnet20").state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.pth")
    assert set(read_state_dict(tmp_path / "w.pth")) == set(state)


def test_mismatches_are_reported_key_by_key(tmp_path):
    path, _ = saved(tmp_path, num_classes=10)  # a CIFAR-10 head on resnet18
    state = torch.load(path, weights_only=True)
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(ConfigError) as err:
        load_weights(create_model("resnet18"), path)  # 1000 classes
    msg = str(err.value)
    assert "1 missing from the file: layer1.0.bn1.running_var" in msg
    assert "1 in the file but not in the model: extra.weight" in msg
    assert "shape mismatch: fc.weight: file (10, 512), model (1000, 512)" in msg
    assert "shape mismatch: fc.bias: file (10,), model (1000,)" in msg


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_object_is_refused_not_run(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"fc.weight": torch.zeros(1), "evil": Payload(marker)}, tmp_path / "w.pth")
    with pytest.raises(
        ConfigError,
        match=r"w.pth: refused: it holds Python objects other than "
        r"tensors.*weights_only=True",
    ):
        read_state_dict(tmp_path / "w.pth")
    assert not marker.exists()


def test_bad_files(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"nonsense")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(
        ConfigError, match=r"expected a state dict \(names -> tensors\), found list"
    ):
        read_state_dict(tmp_path / "list.pth")


def test_cli_reports_and_converts(tmp_path, capsys):
    path, state = saved(tmp_path, name="resnet20")
    out = tmp_path / "converted.safetensors"
    assert main(["weights", "resnet20", str(path), "--save", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["matched"] == len(state)
    assert load_weights(create_model("resnet20"), out).ok
    assert main(["weights", "resnet20", str(path), "--num-classes", "100"]) == 1
    assert "shape mismatch: fc.weight: file (10, 64), model (100, 64)" in capsys.readouterr().out


# ---- not a PyTorch file at all, and inputs found by tests/test_fuzz.py -------------------------


@pytest.mark.parametrize(
    "data,start",
    [
        (bytes(range(7, 200, 3)), "07 0a 0d 10"),  # issue 10, defect 6: "holds Python objects"
        (b"K", "4b"),  # found by test_read_state_dict_pth: torch.load raised IndexError
        (b"J", "4a"),
        (b"", "nothing"),  # torch.load raised EOFError
    ],
)
def test_random_bytes_are_not_a_checkpoint(tmp_path, data, start):
    (tmp_path / "w.pth").write_bytes(data)
    with pytest.raises(
        ConfigError,
        match=rf"w.pth: not a PyTorch checkpoint: torch.save writes a zip archive \(starting "
        rf"50 4b 03 04\) or, in the legacy format, a pickle of torch's magic number; this file "
        rf"starts with {start}: is it damaged",
    ):
        read_state_dict(tmp_path / "w.pth")


def test_a_safetensors_file_named_pth_gets_a_hint(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "w.pth"))
    with pytest.raises(ConfigError, match=r"it looks like a safetensors file: name it"):
        read_state_dict(tmp_path / "w.pth")


def test_the_legacy_format_still_loads(tmp_path):
    state = create_model("resnet20").state_dict()
    torch.save(state, tmp_path / "w.pth", _use_new_zipfile_serialization=False)
    assert read_state_dict(tmp_path / "w.pth").keys() == state.keys()


def test_keys_that_are_not_names(tmp_path):
    # found by test_read_state_dict_pth: {1: tensor} raised AttributeError (int.startswith)
    torch.save({1: torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"expected a state dict \(names -> tensors\)"):
        read_state_dict(tmp_path / "w.pth")


def test_a_zip_bomb_is_refused_before_torch_reads_it(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(2)}, path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/extra", bytes(50_000_000))  # 50 MB of zeros in ~50 KB
    with pytest.raises(ConfigError, match=r"w.pth: refused: its zip entries inflate to 50,000,"):
        read_state_dict(path)
