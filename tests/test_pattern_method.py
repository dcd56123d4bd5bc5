"""Pattern + connectivity pruning (PatDNN line) on a tiny model with 3x3 convs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunebench import OptimizerConfig, Quantization, Structure, Target, Task, Trainer
from prunebench.methods.pattern import PatternConfig, PatternPruning
from prunebench.projections import pattern_library_pdnn
from prunebench.quant import quantize_
from prunebench.verify import verify

LAYERS = ("conv1", "conv2")  # "fc" stays out of the target


class _TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class _TinyTask(Task):
    """192 synthetic 8x8 images, labels from a fixed random linear teacher; 4 steps per epoch."""

    def prepare(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(256, 1, 8, 8, generator=g)
        teacher = torch.randn(64, 4, generator=g)
        self.y = (self.x.flatten(1) @ teacher).argmax(dim=1)

    def build_model(self):
        return _TinyConvNet()

    def steps_per_epoch(self):
        return 4

    def train_batches(self, generator):
        order = torch.randperm(192, generator=generator)
        for i in range(4):
            idx = order[i * 48 : (i + 1) * 48]
            yield self.x[idx], self.y[idx]

    def loss(self, model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    @torch.no_grad()
    def evaluate(self, model):
        model.eval()
        top1 = float((model(self.x[192:]).argmax(1) == self.y[192:]).float().mean())
        model.train()
        return {"top1": top1}

    def example_input(self):
        return self.x[:1]


@pytest.fixture(scope="module")
def task_and_dense():
    task = _TinyTask()
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model()
    Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(15)
    return task, {k: v.clone() for k, v in model.state_dict().items()}


def _run(task_and_dense, structure="pattern", rate=6.0, config=None, epochs=3.0, seed=0):
    task, dense = task_and_dense
    torch.manual_seed(seed)
    model = task.build_model()
    model.load_state_dict(dense)
    target = Target(layers=LAYERS, structure=Structure.parse(structure), rate=rate)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=epochs, seed=seed,
                      progress=False)
    method = PatternPruning(config or PatternConfig(stages=2, iterations=2, rho=1e-2))
    info = method.compress(model, target, trainer)
    return model, target, trainer, info


def test_meets_target_with_suite_quantizer_on_top(task_and_dense):
    model, target, trainer, info = _run(task_and_dense)
    quant = Quantization(4)
    for n in LAYERS:  # the suite's quantizer, as the runner does for prune-only methods
        quantize_(getattr(model, n).weight.data, quant)
    check = verify(model, Target(layers=LAYERS, structure=target.structure, rate=6.0, quantization=quant))
    assert check.achieved_rate >= 6.0
    assert trainer.epochs_spent <= 3.0 + 1e-9
    assert len(info["residuals"]) == 4 and "top1" in info["hard_prune_metrics"]
    kept, total = info["kernels_kept"]["conv2"]
    assert 0 < kept < total == 128  # connectivity pruning removed whole kernels


def test_kernels_use_library_patterns_only(task_and_dense):
    model, _, _, info = _run(task_and_dense, config=PatternConfig(library_size=4, stages=1, iterations=2))
    library = {tuple(bits) for bits in info["library"]}
    assert len(library) == 4 and all(len(b) == 9 and sum(b) == 4 and b[4] == 1 for b in library)
    for n in LAYERS:
        w = getattr(model, n).weight.detach().reshape(-1, 9)
        alive = (w != 0).any(dim=1)
        used = {tuple(int(x) for x in row) for row in (w[alive] != 0).int()}
        assert used <= library, n
        assert len(used) <= 4 and info["patterns_used"][n] == len(used)


def test_library_is_distilled_from_the_dense_kernels(task_and_dense):
    task, dense = task_and_dense
    _, _, _, info = _run(task_and_dense)
    expected = pattern_library_pdnn([dense["conv1.weight"], dense["conv2.weight"]], size=8)
    assert info["library"] == expected.reshape(-1, 9).int().tolist()


def test_layers_outside_the_target_stay_dense(task_and_dense):
    model, _, _, _ = _run(task_and_dense)
    fc = model.fc.weight.detach()
    assert bool((fc != 0).all()) and torch.unique(fc).numel() > 100


def test_deterministic_under_a_seed(task_and_dense):
    a, *_ = _run(task_and_dense, seed=3)
    b, *_ = _run(task_and_dense, seed=3)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_kernel_structure_is_connectivity_only(task_and_dense):
    model, target, _, info = _run(task_and_dense, structure="kernel", rate=3.0,
                                  config=PatternConfig(stages=1, iterations=1))
    verify(model, target)
    assert info["library"] == [] and info["patterns_used"] == {}
    w = model.conv2.weight.detach().reshape(-1, 9)
    alive = (w != 0).any(dim=1)
    assert bool((w[alive] != 0).all())  # kept kernels are whole


def test_config_checks_echo_the_bad_value():
    with pytest.raises(ValueError, match="12"):
        PatternConfig(library_size=12)
    with pytest.raises(ValueError, match="-0.5"):
        PatternConfig(rho=-0.5)
    with pytest.raises(ValueError, match="'sideways'"):
        PatternConfig(allocation="sideways")
    with pytest.raises(ValueError, match="0"):
        PatternConfig(admm_share=0, retrain_share=0)
