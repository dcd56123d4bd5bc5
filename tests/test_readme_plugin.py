"""The README's "Adding a method" example really is a working plugin."""

import re
import shutil
import sys

import pytest

from prunebench.results import ResultStore

from conftest import REPO, make_dist


def _readme_example():
    text = (REPO / "README.md").read_text()
    section = text.split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    name, value = re.search(r"^(\w+)\s*=\s*\"([^\"]+)\"", toml, re.M).groups()
    module = value.split(":")[0]
    return code, module, name, value


def test_example_is_under_30_lines():
    code, *_ = _readme_example()
    assert len(code.strip().splitlines()) < 30


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    code, module, name, value = _readme_example()
    site = tmp_path / "site"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(code)
    make_dist(site, "my-prune", {"prunebench.methods": {name: value}})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    yield name
    sys.modules.pop(module, None)


def test_example_plugin_registers(installed_example):
    from prunebench import Method, registry

    cls = registry.methods.get(installed_example)
    assert issubclass(cls, Method)
    assert registry.methods.info(installed_example).distribution == "my-prune"


@pytest.mark.slow
def test_example_plugin_runs_the_smoke_suite(installed_example, pytester, isolated_cache):
    # the classification smoke suite only; detection and lanes have their own end-to-end tests
    (pytester.path / "suites" / "smoke").mkdir(parents=True)
    shutil.copy(REPO / "suites" / "smoke" / "lenet5_synthetic.yaml", pytester.path / "suites" / "smoke")
    res = pytester.runpytest_subprocess(
        "suites/smoke", "--method", installed_example, "--wandb", "off", "--results", "res", "-p", "no:cacheprovider"
    )
    res.assert_outcomes(passed=3)
    recs = ResultStore(pytester.path / "res").records()
    assert len(recs) == 3
    for r in recs:
        assert r["method"]["name"] == installed_example and r["method"]["distribution"] == "my-prune"
        assert r["status"] == "passed" and r["achieved_rate"] >= 2
