"""The slot cache's mechanism with a Clock, a fake process reactor and a fake llama-server.

The fake llama-server answers ``/props``, ``/slots`` and slot save/restore like the real one
(it writes and reads the slot files in the model's cache directory); with ``hold`` set, its
answers wait until the test releases them, so ordering and timeouts can be checked.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeProcessReactor, ScriptedProbe, SignalLog, make_config, model
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import formatEvent, globalLogPublisher

from llamaswap.config import ModelConfig
from llamaswap.policy import ModelState
from llamaswap.process import ModelProcess, StartAborted
from llamaswap.router import Router
from llamaswap.slotcache import store
from llamaswap.slotcache.client import SlotApiError
from llamaswap.slotcache.config import ModelSlotCache, SlotCacheRoot
from llamaswap.slotcache.manager import SlotCacheManager
from llamaswap.slotcache.metrics import OPERATIONS, SlotCacheMetrics

BYTES_PER_TOKEN = 100
SERVER_MS = 7.5
"""What the fake llama-server says a save or restore took (``timings``)."""


class FakeLlamaServer:
    """What llamaswap sees of llama-server's slot API, with files in ``directory``."""

    def __init__(self, directory: str, slots: int = 1, n_ctx: int = 4096) -> None:
        self.directory = directory
        self.props_answer: dict[str, Any] = {"default_generation_settings": {"n_ctx": n_ctx},
                                             "total_slots": slots}
        self.tokens = dict.fromkeys(range(slots), 0)
        self.tasks = dict.fromkeys(range(slots), -1)
        self.restored: set[int] = set()
        """Slots restored and not used since: like llama-server, ``/slots`` shows neither
        their task nor their tokens."""
        self.calls: list[str] = []
        self.hold = False
        self.held: list[tuple[Deferred[Any], Any]] = []
        self.fail_restore: SlotApiError | None = None
        self.fail_save: dict[int, SlotApiError] = {}

    def _answer(self, call: str, value: Any) -> Deferred[Any]:
        self.calls.append(call)
        if not self.hold:
            return succeed(value() if callable(value) else value)
        d: Deferred[Any] = Deferred()
        self.held.append((d, value))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, value in held:
            d.callback(value() if callable(value) else value)

    def props(self) -> Deferred[dict[str, Any]]:
        return self._answer("props", self.props_answer)

    def slots(self) -> Deferred[Any]:
        return self._answer("slots", lambda: [
            {"id": i, "is_processing": False} if i in self.restored else
            {"id": i, "is_processing": False, "n_prompt_tokens": n, "id_task": self.tasks[i]}
            for i, n in self.tokens.items()])

    def save(self, slot: int, filename: str) -> Deferred[dict[str, Any]]:
        if slot in self.fail_save:
            self.calls.append(f"save {slot}")
            return fail(self.fail_save[slot])

        def write() -> dict[str, Any]:
            size = self.tokens[slot] * BYTES_PER_TOKEN
            with open(os.path.join(self.directory, filename), "wb") as f:
                f.write(b"k" * size)
            return {"id_slot": slot, "n_saved": self.tokens[slot], "n_written": size,
                    "timings": {"save_ms": SERVER_MS}}
        return self._answer(f"save {slot}", write)

    def restore(self, slot: int, filename: str) -> Deferred[dict[str, Any]]:
        def read() -> dict[str, Any]:
            if self.fail_restore is not None:
                raise self.fail_restore
            size = os.path.getsize(os.path.join(self.directory, filename))
            self.tokens[slot] = size // BYTES_PER_TOKEN
            self.restored.add(slot)
            return {"id_slot": slot, "n_restored": self.tokens[slot], "n_read": size,
                    "timings": {"restore_ms": SERVER_MS}}
        self.calls.append(f"restore {slot}")
        if self.hold:
            d: Deferred[dict[str, Any]] = Deferred()
            self.held.append((d, read))
            return d
        try:
            return succeed(read())
        except SlotApiError as e:
            return fail(e)


class FakePrefetcher:
    """Records what the manager reads ahead; each read is a Deferred the test fires."""

    def __init__(self) -> None:
        self.reads: list[tuple[list[str], Deferred[int]]] = []
        self.cancelled: list[list[str]] = []

    def __call__(self, paths: Any) -> Deferred[int]:
        paths = list(paths)
        d: Deferred[int] = Deferred(lambda _: self.cancelled.append(paths))
        self.reads.append((paths, d))
        return d


class Harness:
    def __init__(self, tmp_path: Path, models: list[ModelConfig] | None = None,
                 root_budget: int = 0, slots: int = 1, idle_save: float = 1.0) -> None:
        self.reactor = FakeProcessReactor()
        self.probe = ScriptedProbe()
        self.probe.healthy = True
        self.serving = ScriptedProbe()
        """llama-server's ``/health`` as the manager sees it (models without a health check)."""
        self.serving.healthy = True
        self.signals = SignalLog()
        self.models = {m.id: m for m in models or [cached_model("a")]}
        self.root = SlotCacheRoot(str(tmp_path / "cache"), root_budget, save_timeout=10,
                                  restore_timeout=20, idle_save=idle_save)
        self.busy = 0
        """Requests in flight, as the router would say."""
        self.prefetcher = FakePrefetcher()
        self.events: list[dict[str, Any]] = []
        self.registry = CollectorRegistry()
        self.metrics = SlotCacheMetrics(self.registry, lambda: self.manager.sizes())
        self.servers: dict[str, FakeLlamaServer] = {}
        self.manager = SlotCacheManager(
            self.root, self.reactor, lambda m: self.servers[m.id], models=self.models,
            publish=lambda kind, payload: self.events.append(payload), metrics=self.metrics,
            wall_clock=self.reactor.seconds, serving_probe=lambda m: self.serving,
            prefetcher=self.prefetcher, in_flight=lambda m: self.busy)
        for model_id in self.models:
            self.servers[model_id] = FakeLlamaServer(self.manager.cache_dir(model_id), slots)
        self.processes = {
            m: ModelProcess(c, self.reactor, health_timeout=30, probe=self.probe,
                            signal_group=self.signals, hooks=self.manager)
            for m, c in self.models.items()}

    def start(self, model_id: str = "a") -> list[Any]:
        return result_of(self.processes[model_id].ensure_ready())

    def stop(self, model_id: str = "a", timeout: float | None = None) -> list[Any]:
        process = self.processes[model_id]
        done = result_of(process.stop(timeout))
        return done

    def report_pid(self) -> None:
        """The keeper says it forked the server (all a model without health check waits for)."""
        self.reactor.processes[-1].protocol.childDataReceived(3, b"4321\n")

    def exit(self, model_id: str = "a") -> None:
        self.reactor.processes[-1].exit(0)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def signalled(self) -> bool:
        return any(signum == signal.SIGTERM for _, signum in self.signals.sent)


def cached_model(model_id: str, max_bytes: int = 0, **overrides: Any) -> ModelConfig:
    values: dict[str, Any] = {"cmd": ("llama-server", "-m", f"/nonexistent/{model_id}.gguf"),
                              "slot_cache": ModelSlotCache(True, max_bytes), **overrides}
    return model(model_id, **values)


def result_of(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def use(h: Harness, model_id: str, slot: int, tokens: int, task: int = 1) -> None:
    """A request left ``tokens`` in a slot of the model's server."""
    h.servers[model_id].tokens[slot] = tokens
    h.servers[model_id].tasks[slot] = task
    h.servers[model_id].restored.discard(slot)


def saved_and_stopped(h: Harness, model_id: str = "a") -> None:
    stopped = h.stop(model_id)
    h.exit(model_id)
    assert stopped == [None]


def stop_cut_off_by_the_save_timeout(h: Harness) -> None:
    """Stop ``a`` while its save hangs: it is signalled at ``saveTimeout`` (10 s from the
    stop), not before, and nothing half-saved is left."""
    stopped = h.stop()
    h.reactor.advance(9.9)
    assert not h.signalled()
    h.reactor.advance(0.2)
    assert h.signalled()
    h.exit()
    assert stopped == [None]
    assert store.read_manifest(h.manager.cache_dir("a")) is None
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="save",
                   kind="timeout") == 1


def with_a_saved_cache(tmp_path: Path, tokens: int = 10) -> Harness:
    """A harness whose model ``a`` ran once, held ``tokens`` tokens in slot 0, and was saved
    and stopped."""
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, tokens)
    saved_and_stopped(h)
    return h


def test_the_cache_dir_exists_before_the_command_runs(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.probe.healthy = False
    h.start()
    assert os.path.isdir(h.manager.cache_dir("a"))
    assert h.reactor.processes  # spawned after


def test_slots_are_saved_before_any_signal_and_restored_before_ready(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.start() == [None]
    use(h, "a", 0, 1500)
    server = h.servers["a"]
    server.hold = True
    server.calls.clear()
    stopped = h.stop()
    assert h.processes["a"].state is ModelState.STOPPING
    assert server.calls == ["slots"] and not h.signalled()
    server.release()
    assert server.calls == ["slots", "save 0"] and not h.signalled()
    server.release()
    assert h.signalled()
    h.exit()
    assert stopped == [None]
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None and manifest.tokens == 1500
    assert manifest.size == 1500 * BYTES_PER_TOKEN
    assert h.manager.running_fields(h.models["a"])["slotCache"]["bytes"] == 150_000

    # The next start: healthy, but not ready (no waiter fires) until the restore is done.
    server.tokens[0] = 0
    server.calls.clear()
    ready = h.start()
    assert ready == [] and h.processes["a"].state is ModelState.STARTING
    server.release()  # /props: the fingerprint matches
    assert ready == [] and server.calls == ["props", "restore 0"]
    server.release()  # the restore
    assert ready == [] and server.calls == ["props", "restore 0", "slots"]
    server.release()  # /slots: what the restored slot looks like, before any request
    assert ready == [None] and h.processes["a"].state is ModelState.READY
    assert server.tokens[0] == 1500
    assert h.value("llamaswap_slot_cache_operations_total", model="a", operation="save") == 1
    assert h.value("llamaswap_slot_cache_tokens_total", model="a", operation="restore") == 1500
    assert [e["action"] for e in h.events] == ["save", "restore"]


def test_no_request_is_granted_before_the_restore_completes(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    router = Router(make_config(*h.models.values()), h.processes, h.reactor)
    server = h.servers["a"]
    server.hold = True
    ticket = router.enqueue("a")
    granted = result_of(ticket.deferred)
    server.release()  # /props
    assert granted == [] and h.processes["a"].state is ModelState.STARTING
    server.release()  # the restore
    assert granted == [] and h.processes["a"].state is ModelState.STARTING
    server.release()  # /slots after the restore
    assert len(granted) == 1 and granted[0].model == "a"


def test_a_restore_that_hangs_is_abandoned_after_the_limit_and_the_model_serves_cold(
        tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    h.servers["a"].hold = True
    ready = h.start()
    h.servers["a"].release()  # /props answers, the restore never does
    h.reactor.advance(19.9)
    assert ready == []
    h.reactor.advance(0.2)
    assert ready == [None] and h.processes["a"].state is ModelState.READY
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="restore",
                   kind="timeout") == 1


def test_the_slots_are_saved_and_restored_without_waiting_for_each_other(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, slots=3)
    h.start()
    use(h, "a", 0, 30, task=1)
    use(h, "a", 2, 20, task=5)
    server = h.servers["a"]
    server.hold = True
    server.calls.clear()
    stopped = h.stop()
    server.release()  # /slots
    assert server.calls == ["slots", "save 2", "save 0"]  # both asked before either answers
    assert len(server.held) == 2 and not h.signalled()
    server.release()
    h.exit()
    assert stopped == [None]
    save = h.events[-1]
    assert save["action"] == "save" and save["tokens"] == 50
    assert save["server_ms"] == 2 * SERVER_MS  # llama-server's own time, summed

    server.tokens.update({0: 0, 2: 0})
    server.calls.clear()
    ready = h.start()
    server.release()  # /props
    assert sorted(server.calls) == ["props", "restore 0", "restore 2"] and ready == []
    server.release()
    server.release()  # /slots after the restore
    assert ready == [None] and server.tokens == {0: 30, 1: 0, 2: 20}
    assert h.events[-1]["action"] == "restore" and h.events[-1]["server_ms"] == 2 * SERVER_MS


def test_a_slot_llama_server_refuses_to_save_does_not_cost_the_others(tmp_path: Path) -> None:
    h = Harness(tmp_path, slots=2)
    h.start()
    use(h, "a", 0, 30)
    use(h, "a", 1, 40)
    h.servers["a"].fail_save[0] = SlotApiError("HTTP 500: Unable to save slot", 500)
    saved_and_stopped(h)
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None and [s.slot for s in manifest.slots] == [1]
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="save",
                   kind="error") == 1
    assert h.value("llamaswap_slot_cache_operations_total", model="a", operation="save") == 1


def test_a_save_that_hangs_delays_the_stop_only_until_the_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.servers["a"].hold = True
    stop_cut_off_by_the_save_timeout(h)


def test_a_kill_does_not_wait_for_a_save(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.stop(timeout=0)  # a hung model: no time for the slot API
    assert h.signalled() and h.servers["a"].calls == ["props"]


def test_idle_slots_are_not_saved_and_nothing_is_written_for_an_unused_model(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, slots=3)
    h.start()
    use(h, "a", 1, 50, task=4)
    saved_and_stopped(h)
    assert "save 0" not in h.servers["a"].calls and "save 1" in h.servers["a"].calls
    assert store.slot_files(h.manager.cache_dir("a")) == ["slot-1.bin"]
    h.start()
    use(h, "a", 1, 0, task=4)  # erased: llama-server keeps the task, drops the tokens
    saved_and_stopped(h)
    assert store.slot_files(h.manager.cache_dir("a")) == []
    assert store.read_manifest(h.manager.cache_dir("a")) is None


def test_a_changed_launch_is_not_restored_and_its_stale_files_are_removed(
        tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    h.servers["a"].props_answer["default_generation_settings"] = {"n_ctx": 2048}
    h.servers["a"].calls.clear()
    assert h.start() == [None]
    assert h.servers["a"].calls == ["props"]  # no restore
    assert store.slot_files(h.manager.cache_dir("a")) == []
    assert h.value("llamaswap_slot_cache_fingerprint_mismatches_total", model="a") == 1
    assert h.events[-1]["action"] == "mismatch" and h.events[-1]["changed"] == ["context size"]


def test_a_changed_command_is_not_restored(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    changed = cached_model("a", cmd=("llama-server", "-m", "/nonexistent/a.gguf", "-c", "9"))
    h.processes["a"].reconfigure(changed, 30)
    h.servers["a"].calls.clear()
    h.start()
    assert h.servers["a"].calls == ["props"]
    assert h.events[-1]["changed"] == ["command"]


def test_a_failed_restore_is_a_cold_start_not_an_error(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    h.servers["a"].fail_restore = SlotApiError("HTTP 400: invalid slot", 400)
    assert h.start() == [None]
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="restore",
                   kind="error") == 1
    assert h.manager.running_fields(h.models["a"])["slotCache"]["last"]["action"] == "error"


def test_a_stop_during_the_restore_aborts_the_start(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    h.servers["a"].hold = True
    ready = h.start()
    h.servers["a"].release()  # /props; the restore is in flight
    stopped = h.stop()
    assert len(ready) == 1 and ready[0].check(StartAborted)
    assert h.signalled()  # a start being aborted is not saved
    h.exit()
    assert stopped == [None] and h.processes["a"].state is ModelState.STOPPED
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="restore",
                   kind="error") == 0


def test_the_first_response_verifies_the_restore(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path, tokens=1500)
    h.start()
    h.manager.response_seen("a", 7, None, None)  # not a measured completion: no verdict
    h.manager.response_seen("a", 8, 1510, 1499)
    h.manager.response_seen("a", 9, 1510, 0)  # only the first one counts
    assert h.value("llamaswap_slot_cache_restore_checks_total", model="a", helped="true") == 1
    assert h.value("llamaswap_slot_cache_restore_checks_total", model="a", helped="false") == 0
    saved_and_stopped(h)
    h.start()
    h.manager.response_seen("a", 10, 1510, 0)
    assert h.value("llamaswap_slot_cache_restore_checks_total", model="a", helped="false") == 1
    assert h.events[-1] == {"model": "a", "action": "verify", "helped": False,
                            "cached_tokens": 0, "prompt_tokens": 1510, "restored_tokens": 1500}


def test_a_model_budget_keeps_its_newest_slots(tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a", max_bytes=250 * BYTES_PER_TOKEN)], slots=3)
    h.start()
    use(h, "a", 0, 100, task=1)
    use(h, "a", 1, 100, task=3)
    use(h, "a", 2, 100, task=2)
    saved_and_stopped(h)
    directory = h.manager.cache_dir("a")
    assert store.slot_files(directory) == ["slot-1.bin", "slot-2.bin"]
    assert store.disk_bytes(directory) <= 250 * BYTES_PER_TOKEN
    assert h.value("llamaswap_slot_cache_evictions_total", model="a") == 1
    assert h.value("llamaswap_slot_cache_disk_bytes", model="a") == 200 * BYTES_PER_TOKEN


def test_the_total_budget_evicts_the_oldest_model_cache(tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a"), cached_model("b")],
                root_budget=150 * BYTES_PER_TOKEN)
    h.start("a")
    use(h, "a", 0, 100)
    saved_and_stopped(h, "a")
    h.reactor.advance(5)
    h.start("b")
    use(h, "b", 0, 100)
    saved_and_stopped(h, "b")
    assert store.slot_files(h.manager.cache_dir("a")) == []
    assert store.slot_files(h.manager.cache_dir("b")) == ["slot-0.bin"]
    assert h.manager.sizes() == {"a": 0, "b": 100 * BYTES_PER_TOKEN}


def test_a_model_without_slot_cache_is_left_alone(tmp_path: Path) -> None:
    plain = model("p")
    h = Harness(tmp_path, [plain])
    assert h.start("p") == [None]
    h.stop("p")
    assert h.signalled() and h.servers["p"].calls == []
    assert not os.path.exists(h.manager.cache_dir("p"))
    assert h.manager.running_fields(plain) == {}


@pytest.mark.parametrize("garbage", ["{", '{"model": "a"}'])
def test_an_unreadable_manifest_is_a_cold_start(tmp_path: Path, garbage: str) -> None:
    h = with_a_saved_cache(tmp_path)
    Path(h.manager.cache_dir("a"), store.MANIFEST).write_text(garbage)
    h.servers["a"].calls.clear()
    assert h.start() == [None]
    assert h.servers["a"].calls == ["props"]
    assert store.slot_files(h.manager.cache_dir("a")) == []


@pytest.mark.parametrize("how", ["ttl", "unload", "shutdown", "swap"])
def test_every_orderly_stop_saves_first(tmp_path: Path, how: str) -> None:
    h = Harness(tmp_path, [cached_model("a", ttl=30.0), cached_model("b")])
    router = Router(make_config(*h.models.values()), h.processes, h.reactor)
    lease = result_of(router.enqueue("a").deferred)[0]
    use(h, "a", 0, 10)
    h.servers["a"].hold = True
    h.servers["a"].calls.clear()
    lease.release()
    if how == "ttl":
        h.reactor.advance(30)
    elif how == "unload":
        router.unload(["a"])
    elif how == "shutdown":
        Deferred.fromCoroutine(router.shutdown(5))
    else:
        router.enqueue("b")
    assert h.processes["a"].state is ModelState.STOPPING
    assert h.servers["a"].calls == ["slots"] and not h.signalled()
    h.servers["a"].release()
    h.servers["a"].release()
    assert h.servers["a"].calls == ["slots", "save 0"] and h.signalled()


def test_without_a_health_check_the_restore_waits_for_llama_server_then_precedes_ready(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a", check_endpoint=None)])
    h.serving.healthy = False
    h.start()
    h.report_pid()
    h.reactor.advance(1)
    assert h.processes["a"].state is ModelState.STARTING  # also with nothing to restore yet
    h.serving.healthy = True
    h.reactor.advance(0.25)
    assert h.processes["a"].state is ModelState.READY
    use(h, "a", 0, 1500)
    saved_and_stopped(h)
    server = h.servers["a"]
    server.tokens[0] = 0
    server.calls.clear()
    h.serving.healthy = False  # llama-server loading: /health answers 503
    ready = h.start()
    h.report_pid()
    h.reactor.advance(10)
    assert ready == [] and h.processes["a"].state is ModelState.STARTING
    assert server.calls == [] and h.serving.calls > 1  # no slot call before it answers
    h.serving.healthy = True
    h.reactor.advance(0.25)
    assert server.calls == ["props", "restore 0", "slots"]
    assert ready == [None] and server.tokens[0] == 1500
    assert h.events[-1]["action"] == "restore"


def test_without_a_health_check_a_server_that_never_answers_is_served_cold_after_the_limit(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a", check_endpoint=None)])
    h.start()
    h.report_pid()
    use(h, "a", 0, 10)
    saved_and_stopped(h)
    h.servers["a"].calls.clear()
    h.serving.healthy = False
    ready = h.start()
    h.report_pid()
    h.reactor.advance(29.5)  # the Harness's health timeout is 30 s
    assert ready == []
    h.reactor.advance(1)
    assert ready == [None] and h.processes["a"].state is ModelState.READY
    assert h.servers["a"].calls == []
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="restore",
                   kind="timeout") == 1
    assert "did not answer 200 within 30s" in h.events[-1]["error"]


def test_without_a_health_check_a_stop_while_waiting_aborts_the_start(tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a", check_endpoint=None)])
    h.start()
    h.report_pid()
    use(h, "a", 0, 10)
    saved_and_stopped(h)
    h.serving.healthy = False
    ready = h.start()
    h.report_pid()
    h.reactor.advance(1)
    stopped = h.stop()
    assert len(ready) == 1 and ready[0].check(StartAborted) and h.signalled()
    h.exit()
    assert stopped == [None]
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="restore",
                   kind="timeout") == 0
    assert h.reactor.getDelayedCalls() == []  # the abandoned wait left no probe timer


# -- saves while idle and current caches ----------------------------------------------------


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def ops(h: Harness, operation: str) -> float:
    return h.value("llamaswap_slot_cache_operations_total", model="a", operation=operation)


def test_an_idle_model_is_saved_after_the_delay_and_the_stop_then_saves_nothing(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 1500, task=3)
    server = h.servers["a"]
    server.calls.clear()
    h.manager.model_idle("a")
    h.reactor.advance(0.9)
    assert server.calls == []
    h.reactor.advance(0.2)
    assert server.calls == ["slots", "save 0"]
    assert ops(h, "idle_save") == 1 and ops(h, "save") == 0
    assert h.events[-1]["action"] == "save" and h.events[-1]["idle"] is True
    assert h.manager.running_fields(h.models["a"])["slotCache"]["bytes"] == 150_000

    h.reactor.advance(2.2)
    server.calls.clear()
    saved_and_stopped(h)
    assert server.calls == ["slots"]  # checked, nothing written
    assert ops(h, "save_skipped") == 1 and ops(h, "save") == 0
    current = h.events[-1]
    assert current["action"] == "current" and current["since"] == "idle_save"
    assert current["age_s"] == 2.2 and current["tokens"] == 1500
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None and manifest.tokens == 1500
    server.tokens[0] = 0
    assert h.start() == [None] and server.tokens[0] == 1500  # and it is restored


def test_the_stop_says_in_its_log_line_that_the_cache_was_current(
        tmp_path: Path, logged: list[str]) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.manager.model_idle("a")
    h.reactor.advance(1)
    h.reactor.advance(2.25)
    saved_and_stopped(h)
    assert any("a: slot cache current: saved 2.2 s ago while idle" in line for line in logged)


def test_a_slot_that_changed_after_the_idle_save_is_saved_at_the_stop(tmp_path: Path) -> None:
    h = Harness(tmp_path, slots=2)
    h.start()
    use(h, "a", 0, 100, task=1)
    use(h, "a", 1, 200, task=2)
    h.manager.model_idle("a")
    h.reactor.advance(1)
    assert ops(h, "idle_save") == 1
    use(h, "a", 1, 300, task=7)  # a request on slot 1 only
    server = h.servers["a"]
    server.calls.clear()
    saved_and_stopped(h)
    assert server.calls == ["slots", "save 1"]
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None
    assert {s.slot: s.tokens for s in manifest.slots} == {0: 100, 1: 300}
    assert h.events[-1]["action"] == "save" and h.events[-1]["tokens"] == 400
    assert h.value("llamaswap_slot_cache_tokens_total", model="a", operation="save") == 300


def test_an_erased_slot_is_dropped_from_the_cache_at_the_stop(tmp_path: Path) -> None:
    h = Harness(tmp_path, slots=2)
    h.start()
    use(h, "a", 0, 100, task=1)
    use(h, "a", 1, 200, task=2)
    h.manager.model_idle("a")
    h.reactor.advance(1)
    use(h, "a", 1, 0, task=2)  # erased
    saved_and_stopped(h)
    assert "save 1" not in h.servers["a"].calls[-2:]
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None and [s.slot for s in manifest.slots] == [0]
    assert store.slot_files(h.manager.cache_dir("a")) == ["slot-0.bin"]


def test_no_idle_save_while_a_request_is_in_flight_or_when_turned_off(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.busy = 1  # a request came in since the idle notice
    h.manager.model_idle("a")
    h.reactor.advance(5)
    assert ops(h, "idle_save") == 0 and "save 0" not in h.servers["a"].calls
    h.busy = 0
    h.manager.model_idle("a")  # its end: idle again
    h.reactor.advance(0.5)
    h.manager.model_idle("a")  # another short request: the delay starts over
    h.reactor.advance(0.9)
    assert ops(h, "idle_save") == 0
    h.reactor.advance(0.1)
    assert ops(h, "idle_save") == 1

    off = Harness(tmp_path / "off", idle_save=0)
    off.start()
    use(off, "a", 0, 10)
    off.manager.model_idle("a")
    off.reactor.advance(60)
    assert off.servers["a"].calls == ["props"] and not off.reactor.getDelayedCalls()


def test_a_model_setting_overrides_the_top_level_idle_delay(tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a", slot_cache=ModelSlotCache(True, 0, 5.0))],
                idle_save=0)
    h.start()
    use(h, "a", 0, 10)
    h.manager.model_idle("a")
    h.reactor.advance(4.9)
    assert ops(h, "idle_save") == 0
    h.reactor.advance(0.1)
    assert ops(h, "idle_save") == 1


def test_an_unchanged_idle_model_is_not_saved_twice(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.manager.model_idle("a")
    h.reactor.advance(1)
    h.manager.model_idle("a")  # e.g. a request that was refused before reaching a slot
    h.reactor.advance(1)
    assert h.servers["a"].calls.count("save 0") == 1 and ops(h, "idle_save") == 1


def test_a_stop_during_an_idle_save_waits_for_it_instead_of_saving_again(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    server = h.servers["a"]
    server.hold = True
    server.calls.clear()
    h.manager.model_idle("a")
    h.reactor.advance(1)
    server.release()  # /slots of the idle save
    assert server.calls == ["slots", "save 0"]
    stopped = h.stop()
    assert server.calls == ["slots", "save 0"] and not h.signalled()
    server.release()  # the idle save's write is done; the stop checks /slots
    assert server.calls == ["slots", "save 0", "slots"] and not h.signalled()
    server.release()
    assert h.signalled()
    h.exit()
    assert stopped == [None]
    assert server.calls.count("save 0") == 1
    assert (ops(h, "idle_save"), ops(h, "save_skipped"), ops(h, "save")) == (1, 1, 0)


def test_a_stop_waits_for_a_hanging_idle_save_only_until_the_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.manager.model_idle("a")
    h.reactor.advance(1)
    assert ops(h, "idle_save") == 1
    use(h, "a", 0, 20, task=2)
    h.servers["a"].hold = True
    h.manager.model_idle("a")
    h.reactor.advance(1)  # the second idle save hangs in /slots
    h.reactor.advance(5)
    # the stop's own limit counts from the stop
    stop_cut_off_by_the_save_timeout(h)
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="idle_save",
                   kind="timeout") == 1


def test_a_slot_evicted_after_its_idle_save_is_not_current_at_the_stop(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, [cached_model("a", max_bytes=500)])  # less than one slot
    h.start()
    use(h, "a", 0, 10)  # 1,000 bytes
    h.manager.model_idle("a")
    h.reactor.advance(1)
    assert ops(h, "idle_save") == 1
    assert h.value("llamaswap_slot_cache_evictions_total", model="a") == 1
    saved_and_stopped(h)
    assert ops(h, "save") == 1 and ops(h, "save_skipped") == 0  # saved (and evicted) again
    assert h.value("llamaswap_slot_cache_evictions_total", model="a") == 2


def test_after_a_failed_idle_save_the_stop_saves_everything(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.start()
    use(h, "a", 0, 10)
    h.servers["a"].fail_save[0] = SlotApiError("HTTP 500: Unable to save slot", 500)
    h.manager.model_idle("a")
    h.reactor.advance(1)
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="idle_save",
                   kind="error") == 1
    del h.servers["a"].fail_save[0]
    saved_and_stopped(h)
    assert ops(h, "save") == 1
    assert store.read_manifest(h.manager.cache_dir("a")) is not None


def test_a_restored_cache_nothing_used_is_current_at_the_stop(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path, tokens=1500)
    h.servers["a"].tokens[0] = 0
    h.start()  # restored
    h.reactor.advance(30)
    server = h.servers["a"]
    server.calls.clear()
    saved_and_stopped(h)
    assert server.calls == ["slots"] and ops(h, "save") == 1  # only the first stop saved
    assert h.events[-1]["action"] == "current" and h.events[-1]["since"] == "restore"
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None and manifest.tokens == 1500  # the cache is kept


def test_a_restored_slot_that_was_used_is_saved_at_the_stop(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path, tokens=1500)
    h.start()
    use(h, "a", 0, 1600, task=1)  # the first request after the restore (task IDs restart)
    saved_and_stopped(h)
    assert ops(h, "save") == 2
    manifest = store.read_manifest(h.manager.cache_dir("a"))
    assert manifest is not None and manifest.tokens == 1600


# -- reading the slot files ahead -----------------------------------------------------------


def test_the_slot_files_are_read_ahead_while_the_model_loads_until_the_restore(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, slots=2)
    h.start()
    assert h.prefetcher.reads == []  # nothing saved yet: nothing to read
    use(h, "a", 0, 10)
    use(h, "a", 1, 20)
    saved_and_stopped(h)
    h.probe.healthy = False  # loading
    ready = h.start()
    directory = h.manager.cache_dir("a")
    assert [paths for paths, _ in h.prefetcher.reads] == [
        [os.path.join(directory, "slot-0.bin"), os.path.join(directory, "slot-1.bin")]]
    assert ready == [] and h.prefetcher.cancelled == []
    h.probe.healthy = True
    h.reactor.advance(1)  # healthy: the restore runs, then reading ahead is no use
    assert ready == [None]
    assert h.prefetcher.cancelled == [h.prefetcher.reads[0][0]]


def test_reading_ahead_ends_with_a_stop_and_its_failure_is_only_logged(
        tmp_path: Path, logged: list[str]) -> None:
    h = with_a_saved_cache(tmp_path)
    h.probe.healthy = False
    h.start()
    stopped = h.stop()
    h.exit()
    assert stopped == [None] and len(h.prefetcher.cancelled) == 1
    h.start()
    h.prefetcher.reads[-1][1].errback(OSError("disk on fire"))
    h.probe.healthy = True
    h.reactor.advance(1)
    assert h.processes["a"].state is ModelState.READY
    assert h.events[-1]["action"] == "restore"
    assert any("reading the slot files ahead failed: disk on fire" in line for line in logged)
    assert h.value("llamaswap_slot_cache_failures_total", model="a", operation="restore",
                   kind="error") == 0


def test_a_cache_of_another_command_is_not_read_ahead(tmp_path: Path) -> None:
    h = with_a_saved_cache(tmp_path)
    changed = cached_model("a", cmd=("llama-server", "-m", "/nonexistent/a.gguf", "-c", "9"))
    h.processes["a"].model = changed
    h.start()
    assert len(h.prefetcher.reads) == 0


def test_the_router_says_when_a_model_went_idle_and_what_is_in_flight(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    router = Router(make_config(*h.models.values()), h.processes, h.reactor)
    h.manager.watch(router)
    granted = result_of(router.enqueue("a").deferred)
    lease = granted[0]
    use(h, "a", 0, 10)
    assert h.manager.in_flight("a") == 1
    h.reactor.advance(5)
    assert ops(h, "idle_save") == 0  # busy: no idle notice yet
    lease.release()
    assert h.manager.in_flight("a") == 0
    h.reactor.advance(1)
    assert ops(h, "idle_save") == 1


def test_docs_metrics_md_names_every_operation_label() -> None:
    documented = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    row = next(line for line in documented.splitlines()
               if "`llamaswap_slot_cache_operations_total`" in line)
    assert [op for op in OPERATIONS if f"`{op}`" not in row] == []
