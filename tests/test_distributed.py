"""One run on two processes (gloo on CPU) against the same run on one."""

import socket

import pytest
import torch

pytestmark = pytest.mark.ddp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, out: str, device: str = "cpu") -> None:
    """Dense training then ADMM (penalty, Z/U state, masks, quantizer) on LeNet-5."""
    import os

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                          RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from prunebench import OptimizerConfig, Structure, Target, Trainer, distributed
    from prunebench.config import parse
    from prunebench.methods.admm import ADMM
    from prunebench.target import Quantization
    from prunebench.tasks.classification import ClassificationConfig, ClassificationTask

    assert distributed.init_from_env(device) == (world > 1)
    cfg = parse(ClassificationConfig, {"model": "lenet5", "batch_size": 64,
                                       "data": {"name": "synthetic", "synthetic_train": 512, "synthetic_test": 128}})
    task = ClassificationTask(cfg, device=f"cuda:{rank}" if device == "cuda" else device)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model()
    Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(2)
    target = Target(layers=("conv1", "conv2", "fc1", "fc2"), structure=Structure.parse("unstructured"), rate=4.0,
                    quantization=Quantization(bits=4))
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=2, seed=0, progress=False)
    info = ADMM().compress(model, target, trainer)
    torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "epochs_spent": trainer.epochs_spent, "steps": trainer.steps_taken,
                "primal": [r["primal_residual"] for r in (info or {}).get("residuals", [])
                           if isinstance(r, dict) and "primal_residual" in r]},
               f"{out}/rank{rank}-of{world}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs two CUDA devices")])])
def test_two_processes_match_one_process(tmp_path, device):
    """gloo on CPU; nccl on two GPUs."""
    import torch.multiprocessing as mp

    _run(0, 1, 0, str(tmp_path), device)
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path), device), nprocs=2, join=True)
    one = torch.load(tmp_path / "rank0-of1.pt", weights_only=True)
    r0 = torch.load(tmp_path / "rank0-of2.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1-of2.pt", weights_only=True)
    # every rank holds the same model, masks and levels: bitwise
    for name, tensor in r0["state"].items():
        assert torch.equal(tensor, r1["state"][name]), name
    # the budget is counted once: the same global steps as one process
    assert r0["epochs_spent"] == r1["epochs_spent"] == one["epochs_spent"]
    assert r0["steps"] == one["steps"]
    # against one process: only the order of float additions differs
    for name, tensor in one["state"].items():
        assert torch.equal(tensor == 0, r0["state"][name] == 0), f"{name}: another mask"
        assert torch.allclose(tensor, r0["state"][name], rtol=1e-3, atol=1e-4), \
            (name, (tensor - r0["state"][name]).abs().max().item())


def test_a_suite_under_torchrun_writes_one_record_matching_one_process(pytester, isolated_cache):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from test_pytest_plugin import _records, _suite

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sys.executable}")
    _suite(pytester, "ddp", expect="{max_accuracy_drop: 100}")
    base = ["suites", "--wandb", "off", "-p", "no:cacheprovider", "-q"]
    single = pytester.runpytest_subprocess(*base, "--results", "res1")
    single.assert_outcomes(passed=1)
    shutil.rmtree(isolated_cache, ignore_errors=True)  # the two-process run trains its own dense model
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()),
                           "-m", "pytest", *base, "--results", "res2"],
                          cwd=pytester.path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (one,) = _records(pytester.path / "res1")
    (two,) = _records(pytester.path / "res2")  # rank 0 alone wrote
    assert two["status"] == "passed" and two["point_key"] == one["point_key"]
    assert abs(two["metrics"]["top1"] - one["metrics"]["top1"]) <= 1.0  # 128 test images: 1 point is ~1 image
    assert two["achieved_rate"] == pytest.approx(one["achieved_rate"], rel=1e-6)
    assert two["epochs_spent"] == one["epochs_spent"]
