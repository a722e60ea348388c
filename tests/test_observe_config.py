"""Config keys of logs, metrics and activity: values, defaults and errors with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaswap.config import ConfigError, parse_config

MODELS = "models:\n  m:\n    cmd: server --port ${PORT}\n"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text + "\n" + MODELS, "config.yaml", {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse(text)
    return error.value.problems


def test_defaults() -> None:
    config = parse("")
    assert (config.log_to_stdout, config.log_time_format, config.metrics_max_in_memory,
            config.capture_buffer_bytes, config.store_path, config.store_max_rows) == (
        "both", "", 1000, 5 * 1024 * 1024, None, 100_000)
    assert config.warnings == ()


def test_values_are_read(tmp_path: Path) -> None:
    db = tmp_path / "activity.db"
    config = parse(f"logToStdout: proxy\nlogTimeFormat: RFC3339\nmetricsMaxInMemory: 50\n"
                   f"captureBuffer: 0.5\nstore:\n  path: {db}\n  maxRows: 20\n")
    assert (config.log_to_stdout, config.log_time_format, config.metrics_max_in_memory,
            config.capture_buffer_bytes, config.store_path, config.store_max_rows) == (
        "proxy", "rfc3339", 50, 512 * 1024, str(db), 20)
    assert config.warnings == ()
    assert parse("captureBuffer: 0").capture_buffer_bytes == 0


def test_bad_values_name_file_and_key(tmp_path: Path) -> None:
    assert problems("logToStdout: stderr") == [
        "config.yaml: logToStdout: must be one of proxy, upstream, both, none, got 'stderr'"]
    assert problems("metricsMaxInMemory: 0") == [
        "config.yaml: metricsMaxInMemory: must be at least 1, got 0"]
    assert problems("captureBuffer: -1") == [
        "config.yaml: captureBuffer: must be a number of MiB >= 0, got -1"]
    assert problems("store: {path: ''}")[0].startswith("config.yaml: store.path: must not be "
                                                        "empty")
    assert problems(f"store: {{path: {tmp_path}}}") == [
        f"config.yaml: store.path: {tmp_path} is a directory; give a file name"]
    assert problems("store: {path: /nonexistent-dir/x.db}") == [
        "config.yaml: store.path: cannot write in the directory of /nonexistent-dir/x.db"]
    assert problems("store: {maxRows: 0}") == ["config.yaml: store.maxRows: must be at least "
                                               "1, got 0"]


def test_unknown_time_format_and_store_keys_are_warnings() -> None:
    config = parse("logTimeFormat: iso\nstore: {pth: x.db}")
    assert config.log_time_format == ""
    assert sorted(config.warnings) == [
        "config.yaml: logTimeFormat: unknown time format 'iso' (valid: ansic, unixdate, "
        "rubydate, rfc822, rfc822z, rfc850, rfc1123, rfc1123z, rfc3339, rfc3339nano, kitchen, "
        "stamp, stampmilli, stampmicro, stampnano); lines get no time",
        "config.yaml: store.pth: unknown key, ignored (did you mean 'path'?)"]
