"""Spiking models (harness/tasks/classification/snn.py) and the N-MNIST loader (events.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("snntorch")

from prunebench.interfaces import DatasetUnavailable
from prunebench.tasks.classification.data import DataSpec
from prunebench.tasks.classification.models import create_model
from prunebench.tasks.classification.snn import (
    LIF,
    membrane_levels_problems,
    quantize_membrane,
)
from prunebench.tasks.classification.task import (
    ClassificationConfig,
    ClassificationTask,
)
from prunebench.trainer import OptimizerConfig, Trainer


def test_lif_dynamics_by_hand():
    lif = LIF(beta=0.5, threshold=1.0)
    mem = torch.zeros(1)
    outs = []
    for current in (0.6, 0.6, 0.6, 0.0):
        spk, mem = lif(torch.tensor([current]), mem)
        outs.append((float(spk), round(float(mem), 6)))
    # 0.6 -> 0.9 -> 1.05 (spike, reset by subtraction to 0.05) -> 0.025
    assert outs == [(0.0, 0.6), (0.0, 0.9), (1.0, 0.05), (0.0, 0.025)]


def test_surrogate_gradient_flows_through_spikes():
    lif = LIF()
    x = torch.tensor([0.9, 1.1], requires_grad=True)
    spk, _ = lif(x, torch.zeros(2))
    spk.sum().backward()
    assert spk.tolist() == [0.0, 1.0]
    assert (x.grad > 0).all()  # a Heaviside alone would give zero


def test_membrane_quantizer_levels_and_gradients():
    mem = torch.linspace(-3, 3, 101, requires_grad=True)
    q = quantize_membrane(mem, 2, 0.5)
    assert sorted(set(q.tolist())) == [-1.0, -0.5, 0.0, 0.5]  # 2 bits: codes -2..1
    q.sum().backward()
    assert mem.grad[50] == 1 and mem.grad[0] == 0  # STE inside, zero far outside
    centred = quantize_membrane(torch.linspace(0, 2, 50), 2, 0.25, offset=1.0)
    assert sorted(set(centred.tolist())) == [0.5, 0.75, 1.0, 1.25]
    m2 = torch.linspace(-3, 3, 101, requires_grad=True)
    quantize_membrane(m2, 3, 0.5, grad="stacked").sum().backward()
    assert m2.grad[50] > 0.5 and m2.grad[0] < 0.05  # smooth stack of step surrogates


@pytest.mark.parametrize("encoding,chans", [("direct", 1), ("rate", 1), ("events", 8)])
def test_models_return_time_averaged_logits(encoding, chans):
    torch.manual_seed(0)
    model = create_model("snn_test", num_classes=10, in_chans=chans, encoding=encoding, time_steps=4)
    x = torch.rand(3, chans, 28, 28)
    if encoding == "events":
        x = (x > 0.8).float()
    out = model(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_eval_records_spike_rates_and_membrane_levels():
    torch.manual_seed(0)
    model = create_model("snn_test", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        model(torch.rand(16, 1, 12, 12))
        stats = model.snn_stats()
        assert stats.samples == 16 and set(stats.neurons) == {"lif1", "lif2", "lif3"}
        assert all(0 <= a.spike_rate <= 1 for a in stats.neurons.values())
        assert membrane_levels_problems(stats, 4)  # fp32 membrane: too many levels
        for lif in (model.lif1, model.lif2, model.lif3):
            lif.mem_bits.fill_(3)
            lif.mem_scale.fill_(0.25)
        model.train()
        model.eval()
        model(torch.rand(32, 1, 12, 12))
        stats = model.snn_stats()
        assert stats.samples == 32
        assert all(a.level_count <= 8 for a in stats.neurons.values())
        assert membrane_levels_problems(stats, 3) == []
        assert membrane_levels_problems(stats, 1)  # 3-bit states do not fit 1 bit
        model.train()
        model.eval()
        model(torch.zeros(1, 1, 12, 12))  # a one-sample shape probe does not replace it
        assert model.snn_stats().samples == 32


def test_snn_trains_through_the_classification_task():
    cfg = ClassificationConfig(
        model="snn_test", data=DataSpec(name="synthetic", synthetic_shape=(1, 12, 12), synthetic_train=256,
                                        synthetic_test=128), batch_size=32)
    task = ClassificationTask(cfg)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model()
    before = task.evaluate(model)["top1"]
    Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(6)
    after = task.evaluate(model)["top1"]
    assert after > max(before, 10.0) + 15, (before, after)


# --------------------------------------------------------------- N-MNIST


def _write_sample(path, events):
    from prunebench.tasks.classification.events import write_nmnist_bin

    x, y, t, p = zip(*events)
    write_nmnist_bin(path, x, y, t, p)


def test_nmnist_format_round_trip_through_tonic(tmp_path):
    pytest.importorskip("tonic")
    from prunebench.tasks.classification.events import read_nmnist_bin

    events = [(0, 0, 0, 0), (33, 5, 70000, 1), (7, 33, 2**23 - 1, 1), (12, 30, 65536 + 258, 0)]
    _write_sample(tmp_path / "a.bin", events)
    raw = (tmp_path / "a.bin").read_bytes()
    assert len(raw) == 20
    # event 2 by hand: x=33, y=5, p=1, t=70000=0x011170 -> 0x81, 0x11, 0x70
    assert raw[5:10] == bytes([33, 5, 0x81, 0x11, 0x70])
    back = read_nmnist_bin(tmp_path / "a.bin")
    assert [tuple(int(e[k]) for k in "xytp") for e in back] == events


def test_nmnist_loader_bins_generated_events(tmp_path):
    pytest.importorskip("tonic")
    from prunebench.tasks.classification.events import load_nmnist

    root = tmp_path / "NMNIST" / "Train"
    for digit in (3, 7):
        (root / str(digit)).mkdir(parents=True)
    # span 0..999 us, 4 bins of 250 us
    _write_sample(root / "3" / "00001.bin", [(1, 2, 0, 1), (1, 2, 10, 1), (4, 5, 600, 0), (6, 7, 999, 1)])
    _write_sample(root / "7" / "00002.bin", [(0, 0, 0, 0), (33, 33, 499, 1)])
    split = load_nmnist("train", [tmp_path], time_bins=4)
    assert split.x.shape == (2, 8, 34, 34) and split.y.tolist() == [3, 7]
    a = split.x[0].view(4, 2, 34, 34)
    assert a.sum() == 3  # two events on one pixel in one bin make one spike
    assert a[0, 1, 2, 1] == 1 and a[2, 0, 5, 4] == 1 and a[3, 1, 7, 6] == 1
    b = split.x[1].view(4, 2, 34, 34)
    assert b[0, 0, 0, 0] == 1 and b[3, 1, 33, 33] == 1 and b.sum() == 2
    np.testing.assert_array_equal(split.x.unique().tolist(), [0.0, 1.0])


def test_nmnist_absent_names_where_it_looked(tmp_path):
    from prunebench.tasks.classification.events import load_nmnist

    with pytest.raises(DatasetUnavailable) as err:
        load_nmnist("test", [tmp_path], time_bins=4)
    assert str(tmp_path / "NMNIST" / "Test") in err.value.looked_in
    assert "n-mnist" in err.value.how_to_get.lower()


def test_event_frames_feed_a_spiking_model(tmp_path):
    pytest.importorskip("tonic")
    from prunebench.tasks.classification.events import load_nmnist

    root = tmp_path / "NMNIST" / "Test" / "1"
    root.mkdir(parents=True)
    _write_sample(root / "00001.bin", [(i, i, 10 * i, i % 2) for i in range(34)])
    split = load_nmnist("test", [tmp_path], time_bins=2)
    model = create_model("snn_test", num_classes=10, in_chans=split.x.shape[1], encoding="events", time_steps=2)
    assert model(split.x).shape == (1, 10)


def _generated_nmnist(root, per_class: dict[str, int], seed: int = 0):
    """Recordings whose events trace a digit-specific vertical bar, plus noise events."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for digit in range(10):
            folder = root / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True)
            for i in range(n):
                k = 60
                x = np.concatenate([np.full(k, 3 * digit + 2), rng.integers(0, 34, 10)])
                y = np.concatenate([rng.integers(4, 30, k), rng.integers(0, 34, 10)])
                t = np.sort(rng.integers(0, 300_000, k + 10))
                p = rng.integers(0, 2, k + 10)
                from prunebench.tasks.classification.events import write_nmnist_bin

                write_nmnist_bin(folder / f"{i:05d}.bin", x, y, t, p)


def test_events_task_trains_on_generated_nmnist(tmp_path):
    pytest.importorskip("tonic")
    from prunebench.tasks.classification.event_task import (
        EventClassificationConfig,
        EventClassificationTask,
        EventDataSpec,
    )

    _generated_nmnist(tmp_path, {"Train": 12, "Test": 4})
    cfg = EventClassificationConfig(model="snn_test", data=EventDataSpec(time_bins=2, limit_test=30), batch_size=20)
    task = EventClassificationTask(cfg, data_root=str(tmp_path))
    task.prepare()
    assert task._train_x.shape == (120, 4, 34, 34) and task._test_x.shape[0] == 30
    torch.manual_seed(0)
    model = task.build_model()
    assert model.encoding == "events" and model.time_steps == 2
    Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(8)
    metrics = task.evaluate(model)
    assert metrics["top1"] > 50.0, metrics  # chance is 10
    assert task.data_fingerprint()["time_bins"] == 2


def test_events_task_without_data_is_skipped_with_where_it_looked(tmp_path):
    from prunebench.tasks.classification.event_task import (
        EventClassificationConfig,
        EventClassificationTask,
    )

    task = EventClassificationTask(EventClassificationConfig(model="snn_test"), data_root=str(tmp_path))
    with pytest.raises(DatasetUnavailable) as err:
        task.prepare()
    assert str(tmp_path / "NMNIST" / "Train") in err.value.looked_in
