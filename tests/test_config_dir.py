"""A configuration directory merged after ``-c`` the way llama-swap's ``-config-dir`` is."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llamaswap.cli import main
from llamaswap.config import ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def conf(tmp_path: Path) -> tuple[Path, Path]:
    main_file = write(tmp_path / "config.yaml", """
        startPort: 7000
        logLevel: info
        apiKeys: [one]
        models:
          a: {cmd: "srv --port ${PORT}"}
        """)
    directory = tmp_path / "conf.d"
    directory.mkdir()
    return main_file, directory


def test_files_merge_in_name_order_after_the_main_file(conf: tuple[Path, Path]) -> None:
    main_file, directory = conf
    write(directory / "20-b.yaml", 'models:\n  b: {cmd: "srv --port ${PORT}"}\napiKeys: [two]\n')
    write(directory / "10-c.yml", 'models:\n  c: {cmd: "srv --port ${PORT}"}\nlogLevel: info\n')
    write(directory / "notes.txt", "not: yaml: at all")
    (directory / "sub.yaml").mkdir()
    write(directory / "30-empty.yaml", "# nothing here\n")
    config = load_config(str(main_file), environ={}, config_dir=str(directory))
    assert set(config.models) == {"a", "b", "c"}
    assert [config.models[m].port for m in ("a", "b", "c")] == [7000, 7001, 7002]
    assert config.api_keys == ("one", "two")  # lists are concatenated
    assert config.sources == (str(main_file), str(directory / "10-c.yml"),
                              str(directory / "20-b.yaml"), str(directory / "30-empty.yaml"))
    assert (config.path, config.config_dir) == (str(main_file), str(directory))


def test_a_directory_alone_is_enough(conf: tuple[Path, Path]) -> None:
    _, directory = conf
    write(directory / "a.yaml", 'models:\n  x: {cmd: "srv --port ${PORT}"}\n')
    config = load_config(None, environ={}, config_dir=str(directory))
    assert list(config.models) == ["x"] and config.path == str(directory)


@pytest.mark.parametrize(("text", "expected"), [
    ('models:\n  a: {cmd: "other ${PORT}"}\n', '{file}: duplicate models "a" (already defined '
                                                "in another config source)"),
    ("startPort: 7001\n", '{file}: conflict at "startPort": sets a different value than a '
                          "previous source"),
    ("logLevel: [debug]\n", '{file}: conflict at "logLevel": a list where a previous source '
                            "has a scalar"),
])
def test_conflicts_name_the_file_and_the_key(conf: tuple[Path, Path], text: str,
                                             expected: str) -> None:
    main_file, directory = conf
    extra = write(directory / "x.yaml", text)
    with pytest.raises(ConfigError) as raised:
        load_config(str(main_file), environ={}, config_dir=str(directory))
    assert raised.value.problems == [expected.format(file=extra)]


def test_the_same_value_twice_and_empty_values_are_no_conflict(conf: tuple[Path, Path]) -> None:
    main_file, directory = conf
    write(directory / "x.yaml", "startPort: 7000\nlogLevel:\nhealthCheckTimeout: 30\n")
    config = load_config(str(main_file), environ={}, config_dir=str(directory))
    assert (config.start_port, config.log_level, config.health_check_timeout) == (7000, "info", 30)


def test_the_main_file_inside_the_directory_is_refused(tmp_path: Path) -> None:
    main_file = write(tmp_path / "config.yaml", "models: {}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(main_file), environ={}, config_dir=str(tmp_path))
    assert "is also present in --config-dir" in raised.value.problems[0]


def test_an_empty_or_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration sources found"):
        load_config(None, environ={}, config_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--config-dir .*missing"):
        load_config(None, environ={}, config_dir=str(tmp_path / "missing"))


def test_an_error_inside_one_file_names_that_file(conf: tuple[Path, Path]) -> None:
    main_file, directory = conf
    bad = write(directory / "bad.yaml", "models: [\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(main_file), environ={}, config_dir=str(directory))
    assert raised.value.problems[0].startswith(f"{bad}: line ")


def test_check_config_takes_config_dir(conf: tuple[Path, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    main_file, directory = conf
    write(directory / "b.yaml", 'models:\n  b: {cmd: "srv --port ${PORT}"}\n')
    assert main(["check-config", str(main_file), "--config-dir", str(directory),
                 "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert '"b"' in out and "OK (2 models" in err
    assert main(["check-config", "--config-dir", str(directory)]) == 0


def test_twistd_takes_config_dir_beside_or_instead_of_config(conf: tuple[Path, Path]) -> None:
    from llamaswap.tap import Options

    main_file, directory = conf
    write(directory / "b.yaml", 'models:\n  b: {cmd: "srv --port ${PORT}"}\n')
    options = Options()
    options.parseOptions(["-c", str(main_file), "--config-dir", str(directory)])
    assert set(options["loaded"].models) == {"a", "b"}
    alone = Options()
    alone.parseOptions(["--config-dir", str(directory)])
    assert set(alone["loaded"].models) == {"b"}
