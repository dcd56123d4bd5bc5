import sys
from pathlib import Path

import pytest


def make_dist(root: Path, name: str, entry_points: dict[str, dict[str, str]], version: str = "1.0") -> Path:
    """Write a minimal installed distribution (dist-info) under ``root``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


#: the task block of the tests' tiny suites: LeNet-5 on synthetic images (256 train, 128 test)
SYNTHETIC_TASK = """\
task:
  name: classification
  model: lenet5
  data: {name: synthetic, synthetic_train: 256, synthetic_test: 128}
  batch_size: 64
"""


@pytest.fixture
def fake_dists(tmp_path, monkeypatch):
    """Factory adding fake distributions to sys.path for this test only."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def add(name, entry_points, version="1.0", module_source: dict[str, str] | None = None):
        for mod, src in (module_source or {}).items():
            (root / f"{mod}.py").write_text(src)
        return make_dist(root, name, entry_points, version)

    yield add
    for mod in list(sys.modules):
        if mod.startswith("fakeplug_"):
            del sys.modules[mod]

pytest_plugins = ["pytester"]

# the example plugin's own tests run only once it is installed (test_example_plugin.py does that)
collect_ignore = ["example_plugin"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def synthetic_task():
    """A prepared classification task on small synthetic data (LeNet-5)."""
    from prunebench.config import parse
    from prunebench.tasks.classification import ClassificationConfig, ClassificationTask

    cfg = parse(ClassificationConfig, {"model": "lenet5", "batch_size": 64,
                                       "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 128}})
    task = ClassificationTask(cfg)
    task.prepare()
    return task


@pytest.fixture(scope="session")
def dense(synthetic_task):
    """A trained dense LeNet-5 state for ``synthetic_task`` (25 epochs), once per session."""
    import torch

    from prunebench import OptimizerConfig, Trainer

    torch.manual_seed(0)
    model = synthetic_task.build_model()
    Trainer(synthetic_task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(25)
    return {k: v.clone() for k, v in model.state_dict().items()}


def layer_record(name, mask=None, *, weight=None, bits=None, positions=1, groups=1):
    """A LayerRecord straight from a mask or a weight (zeros pruned); linear if 2-D, conv if 4-D."""
    from prunebench import LayerRecord

    if weight is None:
        weight = mask.float()
    mask = (weight != 0) if mask is None else mask.bool()
    return LayerRecord(
        name=name, kind="conv" if mask.dim() == 4 else "linear", weight_shape=tuple(mask.shape),
        input_shape=(), output_shape=(), output_positions=positions, mask=mask, weight=weight.float(),
        weight_bits=bits, groups=groups,
    )


def compress_synthetic(task, dense, method, *, structure="unstructured", rate=4.0,
                       layers=("conv1", "conv2", "fc1", "fc2"), seed=0, budget=2.0):
    """Run ``method`` on the trained synthetic LeNet-5 as the harness would (no quantizer).
    Returns (model, target, trainer, info)."""
    import torch

    from prunebench import OptimizerConfig, Structure, Target, Trainer

    torch.manual_seed(seed)
    model = task.build_model()
    model.load_state_dict(dense)
    target = Target(layers=layers, structure=Structure.parse(structure), rate=rate)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=budget, seed=seed,
                      progress=False)
    return model, target, trainer, method.compress(model, target, trainer)
