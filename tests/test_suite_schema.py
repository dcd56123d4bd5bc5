import textwrap

import pytest

from prunebench.suite import SuiteError, load_suite

GOOD = """
suite: tiny
version: 1
task:
  name: classification
  model: lenet5
  data: {name: synthetic}
protocols:
  equal_compression: {structure: [unstructured, filter], rates: [4, 16]}
  equal_accuracy: {structure: [unstructured], tolerance: 0.5, search: {lo: 2, hi: 64}}
seeds: [0, 1]
"""


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    return str(err.value), str(path)


def test_good_suite_expands_to_run_points(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    ids = [f"{p.protocol}[{p.id}]" for p in suite.points()]
    assert "equal_compression[magnitude-filter-16x-s1]" in ids
    assert "equal_accuracy[random-unstructured-s0]" in ids
    # 2 methods x (2 structures x 2 rates + 1 structure) x 2 seeds
    assert len(ids) == 2 * (4 + 1) * 2
    assert [p.method for p in suite.points(["magnitude"], [3])] == ["magnitude"] * 5


def test_malformed_yaml_names_file_and_line(tmp_path):
    msg, path = error_of(tmp_path, "suite: x\nversion: [1,\n")
    assert msg.startswith(f"{path}: invalid YAML")
    assert "line" in msg


def test_unknown_key_is_rejected_with_suggestion(tmp_path):
    msg, path = error_of(tmp_path, GOOD + "budgett: {epochs: 1}\n")
    assert msg.startswith(f"{path}: budgett: unknown key")
    assert "Did you mean: budget?" in msg


def test_nested_unknown_key_has_dotted_path(tmp_path):
    msg, path = error_of(tmp_path, GOOD.replace("tolerance: 0.5", "tolerance: 0.5, tolerence: 1"))
    assert msg.startswith(f"{path}: protocols.equal_accuracy.tolerence: unknown key")


def test_wrong_type_reads_expected_x_got_y(tmp_path):
    msg, path = error_of(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: [0, one]"))
    assert msg == f"{path}: seeds[1]: expected an integer in 0..4294967295, got 'one'"


def test_wrong_type_in_plugin_config(tmp_path):
    msg, path = error_of(tmp_path, GOOD + "methods: {magnitude: {allocation: 3}}\n")
    assert msg == f"{path}: methods.magnitude.allocation: expected one of 'global', 'uniform', got 3"


def test_bad_value_in_task_config(tmp_path):
    msg, path = error_of(tmp_path, GOOD.replace("model: lenet5", "model: lenet5\n  batch_size: -1"))
    assert msg == f"{path}: task.batch_size: expected an integer >= 1, got -1"


def test_unknown_method_in_suite_suggests(tmp_path):
    msg, path = error_of(tmp_path, GOOD + "methods: [magnitudee]\n")
    assert msg.startswith(f"{path}: methods.magnitudee:")
    assert "Did you mean: magnitude?" in msg


def test_unknown_structure(tmp_path):
    msg, path = error_of(tmp_path, GOOD.replace("[unstructured, filter]", "[unstructured, filtre]"))
    assert msg == (
        f"{path}: protocols.equal_compression.structure[1]: expected a structure (unstructured, filter, channel, "
        "column, kernel, pattern, block:RxC, pe:N or N:M with 0 < N <= M), got 'filtre'"
    )


def test_search_bounds_checked(tmp_path):
    msg, path = error_of(tmp_path, GOOD.replace("lo: 2, hi: 64", "lo: 64, hi: 2"))
    assert msg == f"{path}: protocols.equal_accuracy.search.hi: expected a number > lo (64), got 2.0"


def test_missing_required_key(tmp_path):
    msg, path = error_of(tmp_path, GOOD.replace("version: 1\n", ""))
    assert msg.startswith(f"{path}: version: missing required key")


def test_smoke_overrides_are_validated_and_applied(tmp_path):
    text = GOOD + "smoke: {seeds: [7], budget: {epochs: 0.1}}\n"
    suite = load_suite(write(tmp_path, text), smoke=True)
    assert suite.seeds == (7,) and suite.budget.epochs == pytest.approx(0.1) and suite.smoke_mode
    msg, path = error_of(tmp_path, GOOD + "smoke: {budget: {epoch: 1}}\n")
    assert msg.startswith(f"{path}: smoke.budget.epoch: unknown key")


def test_yaml_tags_are_not_executed(tmp_path):
    msg, _ = error_of(tmp_path, "suite: !!python/object/apply:os.system ['echo hi']\n")
    assert "invalid YAML" in msg


def test_repository_suites_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "suites"
    files = sorted(root.rglob("*.yaml"))
    assert files, "no suites found"
    for f in files:
        load_suite(f)
        load_suite(f, smoke=True)


DETECTION = """
suite: det
version: 1
task:
  name: detection
  config: retinanet/retinanet_r18_fpn_1x_coco.py
  data: {name: coco_synthetic}
  model_overrides:
    OVERRIDE
protocols:
  equal_compression: {structure: [unstructured], rates: [2]}
"""


@pytest.mark.parametrize("override, key", [
    ("bbox_head.type: os.system", "model_overrides.bbox_head.type"),
    ("bbox_head: {loss_cls: {type: subprocess.run}}", "model_overrides.bbox_head.loss_cls.type"),
    ("test_cfg.nms.type: \"__import__('os').system('id')\"", "model_overrides.test_cfg.nms.type"),
    ("test_cfg: {nms: {type: exec}}", "model_overrides.test_cfg.nms.type"),
    ("_scope_: os", "model_overrides._scope_"),
    ("backbone._delete_: true", "model_overrides.backbone._delete_"),
])
def test_detection_overrides_that_could_run_code_are_refused_at_validation(tmp_path, override, key):
    # refused from plain data: mmdet is never imported, nothing is built
    msg, path = error_of(tmp_path, DETECTION.replace("OVERRIDE", override))
    assert msg.startswith(f"{path}: task: {key}: ")


def test_detection_overrides_with_bare_class_names_validate(tmp_path):
    path = write(tmp_path, DETECTION.replace(
        "OVERRIDE", "{bbox_head.loss_cls.type: FocalLoss, test_cfg.nms.type: soft_nms, backbone.depth: 18}"))
    assert load_suite(path).task_config().model_overrides["bbox_head.loss_cls.type"] == "FocalLoss"


def test_reference_method_must_be_a_method_of_the_suite(tmp_path):
    import yaml

    from prunebench.suite import SuiteError, load_suite

    from conftest import REPO

    text = (REPO / "suites" / "smoke" / "lenet5_synthetic.yaml").read_text()
    data = yaml.safe_load(text)
    data["reference_method"] = "magnitud"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SuiteError, match=r"reference_method: expected one of the suite's methods \(.*magnitude.*\), got 'magnitud'"):
        load_suite(path)
    data["reference_method"] = "magnitude"
    path.write_text(yaml.safe_dump(data))
    assert load_suite(path).reference_method == "magnitude"
