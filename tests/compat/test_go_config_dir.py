"""llama-swap's configuration directory scenarios (``internal/config`` ``merge_test.go``).

Each test writes the files of a scenario into a temporary ``-c`` file and/or directory and
runs ``llamaswap check-config [CONFIG] --config-dir DIR --format json``, as a user would,
then looks at the resolved config it prints or at the problems on stderr. Values the printout
does not show (the API keys) are read from the same files through ``load_config``, the loader
the daemon uses. Error wording is llamaswap's own; the tests check that an error names the
file and the key or id, not llama-swap's sentence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamaswap.cli import main as llamaswap_cli
from llamaswap.config import Config, load_config
from tests.compat.support import Checked

Merged = Checked


def fixed_model(model_id: str, cmd: str) -> str:
    """A ``models:`` entry with a fixed proxy, so no ``${PORT}`` is needed."""
    return f"  {model_id}:\n    cmd: {cmd}\n    proxy: \"http://localhost:9999\"\n"


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "conf.d"
    directory.mkdir()
    return directory


@pytest.fixture
def check(capsys: pytest.CaptureFixture[str]) -> Any:
    """``check(config=None, config_dir=None) -> Merged``: run ``check-config`` on them."""

    def run(config: Path | None = None, config_dir: Path | None = None) -> Merged:
        argv = ["check-config", "--format", "json"]
        argv += [str(config)] if config is not None else []
        argv += ["--config-dir", str(config_dir)] if config_dir is not None else []
        capsys.readouterr()
        status = llamaswap_cli(argv)
        out, err = capsys.readouterr()
        return Merged(status, json.loads(out) if status == 0 else {}, err)

    return run


def loaded(config: Path | None = None, config_dir: Path | None = None) -> Config:
    return load_config(str(config) if config else None,
                       config_dir=str(config_dir) if config_dir else None)


def test_neither_a_file_nor_a_directory_is_refused(check, capsys) -> None:
    """follows internal/config TestLoadConfigSources_NeitherProvided"""
    with pytest.raises(SystemExit) as exited:
        check()
    assert exited.value.code != 0
    assert "--config-dir" in capsys.readouterr().err


def test_a_file_alone_loads(check, tmp_path) -> None:
    """follows internal/config TestLoadConfigSources_ConfigOnly"""
    config = tmp_path / "config.yaml"
    config.write_text("models:\n" + fixed_model("model1", "echo hi")
                      + "groups:\n  group1:\n    members: [model1]\n")
    merged = check(config)
    assert merged.ok, merged.errors
    assert list(merged.models) == ["model1"]
    assert merged.resolved["groups"]["group1"]["members"] == ["model1"]


def test_a_directory_alone_loads_every_file(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_DirOnly"""
    (conf_dir / "a.yaml").write_text("models:\n" + fixed_model("alpha", "echo a"))
    (conf_dir / "b.yaml").write_text("models:\n" + fixed_model("beta", "echo b"))
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    assert sorted(merged.models) == ["alpha", "beta"]


def test_file_and_directory_add_up(check, tmp_path, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_ConfigPlusDirAdditive"""
    config = tmp_path / "config.yaml"
    config.write_text("models:\n" + fixed_model("base", "echo base"))
    (conf_dir / "extra.yaml").write_text("models:\n" + fixed_model("ext", "echo ext"))
    merged = check(config, conf_dir)
    assert merged.ok, merged.errors
    assert sorted(merged.models) == ["base", "ext"]


def test_the_file_may_not_also_be_in_the_directory(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_ConfigInDirOverlap"""
    config = conf_dir / "main.yaml"
    config.write_text("models:\n" + fixed_model("base", "echo base"))
    merged = check(config, conf_dir)
    assert not merged.ok
    assert "main.yaml" in merged.errors and "also present in --config-dir" in merged.errors


@pytest.mark.parametrize("first, second, words", [
    ("models:\n" + fixed_model("dup", "echo a"), "models:\n" + fixed_model("dup", "echo b"),
     ['duplicate models "dup"']),
    ("models:\n" + fixed_model("m1", "echo m1") + "groups:\n  g1:\n    members: [m1]\n",
     "models:\n" + fixed_model("m2", "echo m2") + "groups:\n  g1:\n    members: [m2]\n",
     ['duplicate groups "g1"']),
    ("models:\n" + fixed_model("m1", "echo m1")
     + "peers:\n  remote:\n    proxy: http://x:1\n    models: [m1]\n",
     "models:\n" + fixed_model("m2", "echo m2")
     + "peers:\n  remote:\n    proxy: http://x:2\n    models: [m2]\n",
     ['duplicate peers "remote"']),
    ("models:\n  a:\n    cmd: echo ${PORT}\nselectors:\n  public:\n    strategy: pin\n"
     "    targets: [a]\n",
     "selectors:\n  public:\n    strategy: pin\n    targets: [a]\n",
     ['duplicate selectors "public"']),
])
def test_an_id_defined_in_two_files_is_refused(check, conf_dir, first, second, words) -> None:
    """follows internal/config TestLoadConfigSources_DuplicateModelID,
    TestLoadConfigSources_DuplicateGroupID, TestLoadConfigSources_DuplicatePeer and
    TestConfig_Selectors_MergeDuplicate"""
    (conf_dir / "a.yaml").write_text(first)
    (conf_dir / "b.yaml").write_text(second)
    merged = check(config_dir=conf_dir)
    assert not merged.ok
    assert "b.yaml" in merged.errors  # the file that brought the second definition
    for word in words:
        assert word in merged.errors


def test_a_setting_given_two_different_values_is_a_conflict(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_ScalarConflict"""
    (conf_dir / "a.yaml").write_text("models:\n" + fixed_model("m1", "echo m1")
                                     + "globalTTL: 100\n")
    (conf_dir / "b.yaml").write_text("models:\n" + fixed_model("m2", "echo m2")
                                     + "globalTTL: 200\n")
    merged = check(config_dir=conf_dir)
    assert not merged.ok
    assert 'conflict at "globalTTL"' in merged.errors and "b.yaml" in merged.errors


def test_a_setting_given_the_same_value_twice_is_fine(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_ScalarSameValueNoConflict"""
    for name, model_id in (("a.yaml", "m1"), ("b.yaml", "m2")):
        (conf_dir / name).write_text("models:\n" + fixed_model(model_id, "echo")
                                     + "globalTTL: 100\n")
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    assert merged.resolved["globalTTL"] == 100
    assert merged.models["m1"]["ttl"] == merged.models["m2"]["ttl"] == 100


def test_macros_of_every_file_are_available(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_MacrosConcatenate"""
    (conf_dir / "a.yaml").write_text("macros:\n  LOW: 1\nmodels:\n"
                                     + fixed_model("m1", "echo ${LOW}"))
    (conf_dir / "b.yaml").write_text("macros:\n  HIGH: 2\nmodels:\n"
                                     + fixed_model("m2", "echo ${HIGH}"))
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    assert merged.models["m1"]["cmd"] == "echo 1"
    assert merged.models["m2"]["cmd"] == "echo 2"


def test_a_macro_from_one_file_is_usable_in_another(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_AssertNoUnknownMacrosAfterMerge"""
    (conf_dir / "macros.yaml").write_text("macros:\n  SHARED: hello\nmodels:\n"
                                          + fixed_model("dummy", "echo dummy"))
    (conf_dir / "use.yaml").write_text("models:\n" + fixed_model("user", "echo ${SHARED}"))
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    assert merged.models["user"]["cmd"] == "echo hello"


def test_api_keys_of_every_file_are_kept(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_APIKeysConcatenate"""
    (conf_dir / "a.yaml").write_text("models:\n" + fixed_model("m1", "echo m1")
                                     + "apiKeys: [key-a]\n")
    (conf_dir / "b.yaml").write_text("models:\n" + fixed_model("m2", "echo m2")
                                     + "apiKeys: [key-b]\n")
    assert check(config_dir=conf_dir).ok
    assert sorted(loaded(config_dir=conf_dir).api_keys) == ["key-a", "key-b"]


def test_routing_groups_of_two_files_merge(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_RoutingGroupsMerge"""
    for name, model_id, group in (("a.yaml", "m1", "groupA"), ("b.yaml", "m2", "groupB")):
        (conf_dir / name).write_text(
            "models:\n" + fixed_model(model_id, "echo") + "routing:\n  router:\n"
            f"    settings:\n      groups:\n        {group}:\n          members: [{model_id}]\n")
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    groups = merged.resolved["groups"]
    assert groups["groupA"]["members"] == ["m1"] and groups["groupB"]["members"] == ["m2"]


def test_macros_and_ports_expand_on_the_merged_config(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_EnvMacrosSubstituted"""
    (conf_dir / "a.yaml").write_text(
        'models:\n  m1:\n    cmd: serve --port ${PORT}\n    proxy: "http://localhost:${PORT}"\n')
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    model = merged.models["m1"]
    assert model["cmd"] == f"serve --port {model['port']}"
    assert model["proxy"] == f"http://localhost:{model['port']}"


def test_env_value_inside_a_flow_list_of_a_directory_file(check, conf_dir,
                                                          monkeypatch) -> None:
    """follows internal/config TestLoadConfigSources_EnvMacroInFlowStyleList"""
    monkeypatch.setenv("COMPAT_DIR_API_KEY", "secret123")
    (conf_dir / "a.yaml").write_text("models:\n" + fixed_model("m1", "echo hi"))
    (conf_dir / "keys.yaml").write_text("apiKeys: [${env.COMPAT_DIR_API_KEY}]\nmodels:\n"
                                        "  m2:\n    cmd: echo hi\n"
                                        '    proxy: "http://localhost:9998"\n')
    assert check(config_dir=conf_dir).ok
    assert "secret123" in loaded(config_dir=conf_dir).api_keys


def test_files_merge_in_name_order_every_time(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_SortedOrderDeterministic"""
    # Written z first; lists are concatenated in merge order, so the keys show that order.
    (conf_dir / "z.yaml").write_text("models:\n" + fixed_model("zmodel", "echo z")
                                     + "apiKeys: [z-key]\n")
    (conf_dir / "a.yaml").write_text("models:\n" + fixed_model("amodel", "echo a")
                                     + "apiKeys: [a-key]\n")
    for _ in range(3):
        merged = check(config_dir=conf_dir)
        assert merged.ok, merged.errors
        assert sorted(merged.models) == ["amodel", "zmodel"]
        assert loaded(config_dir=conf_dir).api_keys == ("a-key", "z-key")


def test_an_empty_directory_beside_a_file_is_fine(check, tmp_path, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_EmptyDirWithConfig"""
    config = tmp_path / "main.yaml"
    config.write_text("models:\n" + fixed_model("m1", "echo m1"))
    merged = check(config, conf_dir)
    assert merged.ok, merged.errors
    assert list(merged.models) == ["m1"]


def test_an_empty_directory_alone_is_refused(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_EmptyDirOnly"""
    merged = check(config_dir=conf_dir)
    assert not merged.ok
    assert "no configuration sources found" in merged.errors and str(conf_dir) in merged.errors


def test_a_list_where_another_file_has_a_number_is_a_conflict(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_KindMismatchErrors"""
    (conf_dir / "a.yaml").write_text("startPort: 5800\nmodels:\n" + fixed_model("m1", "echo"))
    (conf_dir / "b.yaml").write_text("startPort: [5800, 5801]\nmodels:\n"
                                     + fixed_model("m2", "echo"))
    merged = check(config_dir=conf_dir)
    assert not merged.ok
    assert 'conflict at "startPort"' in merged.errors and "b.yaml" in merged.errors


def test_a_section_missing_from_one_file_comes_from_another(check, conf_dir) -> None:
    """follows internal/config TestLoadConfigSources_NullYieldsToValue"""
    (conf_dir / "a.yaml").write_text("models:\n" + fixed_model("m1", "echo m1"))
    (conf_dir / "b.yaml").write_text("routing:\n  router:\n    settings:\n      groups:\n"
                                     "        g1:\n          members: [m1]\nmodels:\n"
                                     + fixed_model("m2", "echo m2"))
    merged = check(config_dir=conf_dir)
    assert merged.ok, merged.errors
    assert merged.resolved["groups"]["g1"]["members"] == ["m1"]
