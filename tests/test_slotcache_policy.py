"""The slot cache's pure parts: fingerprints, slot choice, eviction, config decoding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamaswap.config import ConfigError, parse_config
from llamaswap.slotcache.config import (
    ModelSlotCache,
    SlotCacheRoot,
    default_root,
    model_dir_name,
    parse_model_slot_cache,
    parse_slot_cache_root,
)
from llamaswap.slotcache.policy import (
    CacheEntry,
    FileStamp,
    choose_evictions,
    command_identity,
    fingerprint,
    fingerprint_differences,
    idle_save_due,
    may_match_launch,
    model_files,
    plan_save,
    restore_helped,
    slot_states,
    slots_to_save,
)

PROPS = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
CMD = ("llama-server", "-m", "/m/a.gguf", "--port", "5800", "-c", "4096")
FILES = [FileStamp("/m/a.gguf", 1000, 5)]


def test_model_files_are_found_in_both_option_spellings() -> None:
    cmd = ["llama-server", "-m", "a.gguf", "--mmproj=p.gguf", "-md", "d.gguf", "-c", "8"]
    assert model_files(cmd) == ["a.gguf", "p.gguf", "d.gguf"]


def test_the_port_and_host_are_not_part_of_a_launch() -> None:
    assert command_identity(["s", "--port", "1", "--host=x", "-c", "8"]) == ["s", "-c", "8"]
    moved = CMD[:4] + ("5801",) + CMD[5:]
    assert fingerprint_differences(fingerprint(CMD, FILES, PROPS),
                                   fingerprint(moved, FILES, PROPS)) == []


@pytest.mark.parametrize(("cmd", "files", "props", "changed"), [
    (CMD + ("--temp", "0"), FILES, PROPS, ["command"]),
    (CMD, [FileStamp("/m/a.gguf", 1000, 6)], PROPS, ["model files"]),
    (CMD, [FileStamp("/m/a.gguf", 1001, 5)], PROPS, ["model files"]),
    (CMD, FILES, {**PROPS, "total_slots": 2}, ["slot count"]),
    (CMD, FILES, {**PROPS, "default_generation_settings": {"n_ctx": 2048}}, ["context size"]),
])
def test_any_change_of_the_launch_is_a_mismatch(cmd: tuple[str, ...], files: list[FileStamp],
                                                props: dict, changed: list[str]) -> None:
    stored = fingerprint(CMD, FILES, PROPS)
    assert fingerprint_differences(stored, fingerprint(cmd, files, props)) == changed


def test_a_cache_without_a_readable_fingerprint_never_matches() -> None:
    assert fingerprint_differences(None, fingerprint(CMD, FILES, PROPS)) == ["no fingerprint"]


def test_only_slots_holding_tokens_are_saved_most_recent_first() -> None:
    slots = [{"id": 0, "n_prompt_tokens": 0, "id_task": 9},
             {"id": 1, "n_prompt_tokens": 40, "id_task": 3},
             {"id": 2, "n_prompt_tokens": 7, "id_task": 8},
             {"id": 3},  # a slot never used: no task, no tokens
             "garbage"]
    assert [(s.slot, s.tokens) for s in slots_to_save(slots)] == [(2, 7), (1, 40)]
    assert slots_to_save({"error": "no"}) == []


def _entry(model: str, slot: int, size: int, saved: float, task: int = 0) -> CacheEntry:
    return CacheEntry(model, slot, size, (saved, task))


def test_eviction_keeps_a_model_within_its_budget_dropping_its_oldest_slots() -> None:
    entries = [_entry("a", 0, 60, 10, task=1), _entry("a", 1, 60, 10, task=5),
               _entry("b", 0, 60, 1)]
    assert choose_evictions(entries, {"a": 100}, 0) == [entries[0]]


def test_eviction_keeps_the_total_budget_oldest_cache_first() -> None:
    old, middle, new = _entry("a", 0, 50, 1), _entry("b", 0, 50, 2), _entry("c", 0, 50, 3)
    assert choose_evictions([new, old, middle], {}, 100) == [old]
    assert choose_evictions([new, old, middle], {}, 0) == []
    assert choose_evictions([new], {}, 10) == [new]  # alone and too big: gone too


def test_a_restore_helped_only_if_the_first_response_reused_tokens() -> None:
    assert restore_helped(1400) and not restore_helped(0) and not restore_helped(None)


# -- config -------------------------------------------------------------------------------


def test_model_setting_spellings() -> None:
    problems: list[tuple[str, str]] = []
    report = lambda key, message: problems.append((key, message))  # noqa: E731
    assert parse_model_slot_cache(True, "m", report) == ModelSlotCache(True, 0)
    assert parse_model_slot_cache(None, "m", report) == ModelSlotCache(False, 0)
    assert parse_model_slot_cache({"maxBytes": "1MiB"}, "m", report) == \
        ModelSlotCache(True, 1 << 20)
    assert parse_model_slot_cache({"enabled": False}, "m", report).enabled is False
    assert problems == []
    parse_model_slot_cache({"maxBytes": "lots"}, "models.x.slotCache", report)
    parse_model_slot_cache({"maxBytes": 2**60}, "models.z.slotCache", report)
    parse_model_slot_cache("yes", "models.y.slotCache", report)
    assert [key for key, _ in problems] == ["models.x.slotCache.maxBytes",
                                            "models.z.slotCache.maxBytes", "models.y.slotCache"]


def test_root_defaults_under_xdg_cache_home() -> None:
    assert default_root({"XDG_CACHE_HOME": "/c"}) == "/c/llamaswap/slot-cache"
    assert default_root({"HOME": "/h"}) == "/h/.cache/llamaswap/slot-cache"
    root = parse_slot_cache_root({"dir": "/x", "maxBytes": "2GB", "saveTimeout": 5},
                                 lambda *_: None)
    assert (root.dir, root.max_bytes, root.save_timeout) == ("/x", 2_000_000_000, 5.0)


def test_model_dir_names_are_plain_and_distinct() -> None:
    assert model_dir_name("org/model:q4").startswith("org_model_q4-")
    assert model_dir_name("a/b") != model_dir_name("a_b")
    assert "/" not in model_dir_name("../..")


def test_config_expands_the_macro_to_the_models_cache_dir(tmp_path: Path) -> None:
    text = f"""
slotCache: {{dir: {tmp_path}/cache, maxBytes: 1GB}}
models:
  a:
    cmd: llama-server --port ${{PORT}} --slot-save-path ${{SLOT_CACHE_DIR}}
    slotCache: {{enabled: true, maxBytes: 100MB}}
  b:
    cmd: llama-server --port ${{PORT}}
"""
    config = parse_config(text, "c.yaml")
    a = config.models["a"]
    assert a.cmd[-1] == os.path.join(str(tmp_path), "cache", model_dir_name("a"))
    assert a.slot_cache == ModelSlotCache(True, 100_000_000)
    assert config.models["b"].slot_cache.enabled is False
    assert config.slot_cache.max_bytes == 1_000_000_000


def test_config_refuses_the_macro_without_slot_cache() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("models:\n  a:\n    cmd: s --slot-save-path ${SLOT_CACHE_DIR}\n", "c.yaml")
    assert "c.yaml: models.a.cmd: ${SLOT_CACHE_DIR} is used but slotCache is not enabled" in \
        str(error.value)


def test_config_names_a_bad_value() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("slotCache: {maxBytes: -3}\nmodels:\n  a:\n    cmd: s\n    slotCache: 4\n",
                     "c.yaml")
    text = str(error.value)
    assert "c.yaml: slotCache.maxBytes: must be a size" in text
    assert "c.yaml: models.a.slotCache: must be true, false or a mapping" in text


def test_an_unknown_slot_cache_key_is_a_warning_as_everywhere() -> None:
    config = parse_config("slotCache: {size: 1}\nmodels:\n  a:\n    cmd: s --port ${PORT}\n"
                          "    slotCache: {enabled: true, sise: 2}\n", "c.yaml")
    assert config.models["a"].slot_cache.enabled
    assert any("slotCache.size" in w for w in config.warnings)
    assert any("models.a.slotCache.sise" in w for w in config.warnings)


# -- what is current, when to save while idle -----------------------------------------------

# /slots as llama-server 0.3.36 answers: a used slot, a restored one nothing used since, a
# slot that never held anything, one that is processing.
USED = {"id": 0, "is_processing": False, "id_task": 7, "n_prompt_tokens": 1500}
RESTORED = {"id": 1, "is_processing": False}
FRESH = {"id": 2, "is_processing": False}
BUSY = {"id": 3, "is_processing": True, "id_task": 9, "n_prompt_tokens": 40}


def test_a_slot_state_is_its_last_task_and_token_count() -> None:
    assert slot_states([USED, RESTORED, BUSY, {"no": "id"}, "junk"]) == {
        0: (7, 1500), 1: (None, None), 3: None}
    assert slot_states({"error": "x"}) == {}


def test_a_save_writes_only_the_slots_that_changed_since_their_file() -> None:
    plan = plan_save([USED, RESTORED, FRESH], {0: (7, 1500), 1: (None, None)})
    assert plan.save == [] and plan.current == {0, 1}

    after_a_request = {**USED, "id_task": 8}
    plan = plan_save([after_a_request, RESTORED], {0: (7, 1500), 1: (None, None)})
    assert [s.slot for s in plan.save] == [0] and plan.current == {1}
    assert plan.states[0] == (8, 1500)  # what the save makes current

    erased = {**USED, "n_prompt_tokens": 0}  # an erase keeps the task
    plan = plan_save([erased], {0: (7, 1500)})
    assert plan.save == [] and plan.current == frozenset()  # its old file goes


def test_a_processing_slot_is_never_current() -> None:
    plan = plan_save([BUSY], {3: (9, 40)})
    assert [s.slot for s in plan.save] == [3] and plan.current == frozenset()


def test_nothing_is_current_without_a_record() -> None:
    plan = plan_save([USED, RESTORED], {})
    assert [s.slot for s in plan.save] == [0] and plan.current == frozenset()


@pytest.mark.parametrize(("delay", "ready", "in_flight", "saving", "due"), [
    (1.0, True, 0, False, True),
    (0.0, True, 0, False, False),  # idleSave off
    (1.0, False, 0, False, False),  # stopping, stopped or starting
    (1.0, True, 1, False, False),  # a request came in meanwhile
    (1.0, True, 0, True, False),  # a save is running
])
def test_when_an_idle_save_runs(delay: float, ready: bool, in_flight: int, saving: bool,
                                due: bool) -> None:
    assert idle_save_due(delay, ready, in_flight, saving) is due


def test_a_cache_may_match_a_launch_before_props_by_command_and_files() -> None:
    files = [FileStamp("/m/a.gguf", 10, 1)]
    cmd = ["llama-server", "-m", "/m/a.gguf", "--port", "5800"]
    stored = fingerprint(cmd, files, PROPS)
    assert may_match_launch(stored, ["llama-server", "-m", "/m/a.gguf", "--port", "5801"],
                            files)
    assert not may_match_launch(stored, [*cmd, "-c", "8192"], files)
    assert not may_match_launch(stored, cmd, [FileStamp("/m/a.gguf", 10, 2)])
    assert not may_match_launch(None, cmd, files)


def test_idle_save_spellings() -> None:
    problems: list[tuple[str, str]] = []
    report = lambda key, message: problems.append((key, message))  # noqa: E731
    root = parse_slot_cache_root({}, report)
    assert root.idle_save == 1.0
    assert parse_slot_cache_root({"idleSave": 2.5}, report).idle_save == 2.5
    assert parse_slot_cache_root({"idleSave": False}, report).idle_save == 0
    assert parse_slot_cache_root({"idleSave": 0}, report).idle_save == 0
    assert parse_slot_cache_root({"idleSave": True}, report).idle_save == 1.0
    model = parse_model_slot_cache({"idleSave": 3}, "m", report)
    assert model.idle_save == 3.0 and model.idle_delay(SlotCacheRoot("/x", idle_save=1)) == 3
    inherit = parse_model_slot_cache(True, "m", report)
    assert inherit.idle_save is None and inherit.idle_delay(SlotCacheRoot("/x", idle_save=7)) == 7
    off = parse_model_slot_cache({"idleSave": False}, "m", report)
    assert off.idle_delay(SlotCacheRoot("/x", idle_save=7)) == 0
    assert problems == []
    parse_slot_cache_root({"idleSave": -1}, report)
    parse_model_slot_cache({"idleSave": "soon"}, "models.a.slotCache", report)
    assert [key for key, _ in problems] == ["slotCache.idleSave", "models.a.slotCache.idleSave"]
    assert "0 or false: no saves while idle" in problems[0][1]


def test_config_names_a_bad_idle_save() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("slotCache: {idleSave: -2}\nmodels:\n  a:\n    cmd: s --port ${PORT}\n"
                     "    slotCache: {enabled: true, idleSave: later}\n", "c.yaml")
    text = str(error.value)
    assert "c.yaml: slotCache.idleSave: must be a number of seconds from 0 to 86400" in text
    assert "c.yaml: models.a.slotCache.idleSave: must be a number of seconds" in text
    assert "got 'later'" in text
