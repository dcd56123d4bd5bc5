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
