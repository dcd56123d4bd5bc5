import pytest

from prunebench import registry
from prunebench.registry import PluginError, UnknownPlugin
from prunebench.interfaces import Method


def test_builtins_are_registered_by_entry_point():
    assert {"magnitude", "random"} <= set(registry.methods.names())
    assert {"storage", "compute"} <= set(registry.hardware_models.names())
    assert "classification" in registry.tasks.names()
    assert registry.methods.info("magnitude").distribution == "prunebench"


def test_unknown_name_lists_installed_and_suggests_closest():
    with pytest.raises(UnknownPlugin) as err:
        registry.methods.get("magnitud")
    msg = str(err.value)
    assert "Unknown method 'magnitud'" in msg
    assert "Did you mean: magnitude?" in msg
    assert "random" in msg  # installed names are listed


def test_import_failure_names_plugin_and_distribution(fake_dists):
    fake_dists("fakeplug-broken", {"prunebench.methods": {"broken": "fakeplug_missing_module:Thing"}}, version="2.3")
    with pytest.raises(PluginError) as err:
        registry.methods.get("broken")
    msg = str(err.value)
    assert "'broken'" in msg and "fakeplug-broken 2.3" in msg and "failed to import" in msg


def test_plugin_raising_on_import_is_reported(fake_dists):
    fake_dists(
        "fakeplug-raises",
        {"prunebench.methods": {"raises": "fakeplug_raises:Thing"}},
        module_source={"fakeplug_raises": "raise RuntimeError('boom at import')\n"},
    )
    with pytest.raises(PluginError, match="boom at import"):
        registry.methods.get("raises")


def test_two_distributions_claiming_one_name(fake_dists):
    fake_dists("fakeplug-one", {"prunebench.methods": {"twin": "fakeplug_a:A"}})
    fake_dists("fakeplug-two", {"prunebench.methods": {"twin": "fakeplug_b:B"}})
    with pytest.raises(PluginError) as err:
        registry.methods.names()
    msg = str(err.value)
    assert "fakeplug-one" in msg and "fakeplug-two" in msg and "'twin'" in msg


def test_entry_point_must_be_a_method_subclass(fake_dists):
    fake_dists(
        "fakeplug-notmethod",
        {"prunebench.methods": {"notmethod": "fakeplug_nm:Thing"}},
        module_source={"fakeplug_nm": "class Thing:\n    pass\n"},
    )
    with pytest.raises(PluginError, match="not a subclass of prunebench.Method"):
        registry.methods.get("notmethod")


def test_third_party_method_loads(fake_dists):
    src = (
        "from prunebench import Method\n"
        "class Mine(Method):\n"
        "    def compress(self, model, target, trainer):\n"
        "        return None\n"
    )
    fake_dists("fakeplug-good", {"prunebench.methods": {"mine": "fakeplug_good:Mine"}}, module_source={"fakeplug_good": src})
    cls = registry.methods.get("mine")
    assert issubclass(cls, Method) and cls.__name__ == "Mine"
    assert registry.methods.info("mine").distribution == "fakeplug-good"
