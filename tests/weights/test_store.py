"""Weight files: torchvision download names are hash-checked; converted folders round-trip."""

import os

import numpy as np
import pytest
import torch

from jwsol.errors import DataError
from jwsol.weights import store


def test_torchvision_file_names_are_hash_checked(tmp_path):
    pth = str(tmp_path / "weights.pth")
    torch.save({"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.zeros(2)}, pth)
    # Our weights under the real download name do not have its SHA-256 prefix f37072fd.
    fake_download = tmp_path / "resnet18-f37072fd.pth"
    os.link(pth, fake_download)
    with pytest.raises(DataError, match="does not start with f37072fd.*corrupt or incomplete"):
        store.load_torch_state_dict(str(fake_download))
    # Other names are not hash names, even when they end in hex digits.
    own_name = tmp_path / "finetuned-20240101.pth"
    os.link(pth, own_name)
    state_dict, sha = store.load_torch_state_dict(str(own_name))
    assert sha == store.sha256(pth)
    np.testing.assert_array_equal(state_dict["fc.weight"], np.arange(6.0).reshape(2, 3))


def test_missing_pth_names_the_download(tmp_path):
    with pytest.raises(DataError, match="https://download.pytorch.org/models/resnet50-0676ba61"):
        store.load_torch_state_dict(str(tmp_path / "resnet50-0676ba61.pth"))


def test_save_then_load_variables_round_trip(tmp_path):
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    meta = {"format": store.FORMAT, "arch": "alexnet", "num_classes": None}
    store.save_variables({"params": {"conv": {"kernel": kernel}}}, str(tmp_path), meta)
    loaded, read_meta, path = store.load_variables(str(tmp_path), "alexnet")
    np.testing.assert_array_equal(loaded["params"]["conv"]["kernel"], kernel)
    assert read_meta == meta and path == os.path.join(str(tmp_path), store.VARIABLES_FILE)
    assert sorted(os.listdir(tmp_path)) == [store.META_FILE, store.VARIABLES_FILE]  # no .tmp left
    with pytest.raises(DataError, match="holds arch='alexnet'"):
        store.load_variables(str(tmp_path), "resnet18")
