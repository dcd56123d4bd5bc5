from prunebench.baseline import dense_baseline
from prunebench.suite import DenseSpec
from prunebench.trainer import OptimizerConfig


def test_dense_model_is_trained_once_then_loaded(synthetic_task, tmp_path):
    spec = DenseSpec(epochs=1, optimizer=OptimizerConfig(lr=0.05))
    first = dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False)
    again = dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False)
    assert (first.source, again.source) == ("trained", "cache")
    assert first.key == again.key and first.metrics == again.metrics
    assert all((first.state[k] == again.state[k]).all() for k in first.state)


def test_key_depends_on_seed_and_recipe(synthetic_task, tmp_path):
    spec = DenseSpec(epochs=1)
    a = dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False)
    b = dense_baseline("classification", synthetic_task, spec, 1, cache_dir=tmp_path, progress=False)
    c = dense_baseline("classification", synthetic_task, DenseSpec(epochs=2), 0, cache_dir=tmp_path, progress=False)
    assert len({a.key, b.key, c.key}) == 3
    assert b.source == c.source == "trained"


def test_checkpoint_is_loaded_not_trained(synthetic_task, tmp_path):
    from prunebench.checkpoint import save_state_dict

    model = synthetic_task.build_model()
    path = tmp_path / "w.safetensors"
    save_state_dict(model.state_dict(), path)
    got = dense_baseline("classification", synthetic_task, DenseSpec(checkpoint=str(path)), 0, cache_dir=tmp_path)
    assert got.source == "checkpoint"
    assert all((got.state[k] == v).all() for k, v in model.state_dict().items())
    assert not (tmp_path / "dense").exists()


def test_a_damaged_cache_entry_is_named_moved_aside_and_rebuilt(synthetic_task, tmp_path):
    import pytest

    spec = DenseSpec(epochs=1, optimizer=OptimizerConfig(lr=0.05))
    first = dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False)
    weights = tmp_path / "dense" / f"{first.key}.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match=rf"dense cache entry .*{first.key}\.safetensors is damaged"):
        again = dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False)
    assert again.source == "trained" and again.metrics == first.metrics
    assert len(list((tmp_path / "dense").glob("*.corrupt-*"))) == 2  # weights and metadata kept for a look
    assert dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False).source == "cache"


def test_a_held_lock_times_out_naming_its_holder(synthetic_task, tmp_path, monkeypatch):
    import subprocess
    import sys
    import time

    import pytest

    from prunebench import baseline
    from prunebench.baseline import baseline_key
    from prunebench.config import to_plain

    monkeypatch.setattr(baseline, "LOCK_TIMEOUT_S", 1.0)
    monkeypatch.setattr(baseline, "LOCK_NOTICE_S", 0.5)
    spec = DenseSpec(epochs=1)
    key = baseline_key("classification", synthetic_task, to_plain(spec), 0)
    lock = tmp_path / "dense" / f"{key}.lock"
    lock.parent.mkdir(parents=True)
    (lock.parent / f"{key}.lock.holder").write_text("pid 4242 on elsewhere since 2026-12-04T00:00:00Z\n")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire();"
        "print('held', flush=True); time.sleep(60)"), str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.warns(UserWarning, match="held by pid 4242"):
            with pytest.raises(TimeoutError, match=r"still held after .* by pid 4242 on elsewhere"):
                dense_baseline("classification", synthetic_task, spec, 0, cache_dir=tmp_path, progress=False)
        assert time.monotonic() - start < 30
    finally:
        holder.kill()
        holder.wait()
