"""ModelProcess lifecycle with a fake process reactor and a Clock: no real processes, no sleeps."""

from __future__ import annotations

import signal

import pytest
from fakes import FakeProcessReactor, ScriptedProbe, SignalLog, model
from twisted.internet.defer import Deferred

from llamaswap.policy import ModelState
from llamaswap.process import FAMILY_KILL_GRACE, KILL_FAMILY, ModelProcess, StartError


def make(reactor: FakeProcessReactor, probe: ScriptedProbe | None = None,
         signals: SignalLog | None = None, health_timeout: float = 30.0,
         **overrides: object) -> ModelProcess:
    signals = signals or SignalLog()  # group and keeper signals alike: none is really sent
    return ModelProcess(model("m", env=(("MODEL_VAR", "1"),), **overrides), reactor,
                        health_timeout=health_timeout, probe=probe or ScriptedProbe(),
                        signal_group=signals, signal_keeper=signals)


def result_of(d: Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def test_start_spawns_the_command_under_a_keeper_with_inherited_env_plus_model_env(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INHERITED", "yes")
    reactor = FakeProcessReactor()
    process = make(reactor)
    process.ensure_ready()
    spawned = reactor.last
    assert spawned.model_argv == ["server", "--model", "m"]
    assert spawned.args[3].endswith("keeper.py")  # the model's parent: own group, dies with us
    assert spawned.env["INHERITED"] == "yes" and spawned.env["MODEL_VAR"] == "1"
    assert process.state is ModelState.STARTING and process.pid == spawned.pid


def test_model_processes_carry_the_instance_marker_which_their_env_cannot_override() -> None:
    reactor = FakeProcessReactor()
    process = ModelProcess(model("org/m", env=(("LLAMASWAP_INSTANCE", "spoof"),)), reactor,
                           health_timeout=30, probe=ScriptedProbe(), signal_group=SignalLog(),
                           signal_keeper=SignalLog(), instance="0123456789ab")
    process.ensure_ready()
    assert reactor.last.env["LLAMASWAP_INSTANCE"] == "0123456789ab:org/m"


def test_run_ended_fires_when_that_run_is_over_and_at_once_for_an_old_run() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    probe.healthy = True
    process = make(reactor, probe)
    process.ensure_ready()
    first = process.run
    ended = result_of(process.run_ended(first))
    withdrawn = process.run_ended(first)
    withdrawn.addErrback(lambda _: None)
    withdrawn.cancel()  # only this caller leaves
    assert ended == []
    reactor.last.exit(signal=9)
    assert ended == [None] and process.state is ModelState.STOPPED
    process.ensure_ready()
    assert process.run == first + 1
    assert result_of(process.run_ended(first)) == [None]  # over long ago
    assert result_of(process.run_ended(process.run)) == []


def test_first_probe_is_immediate_and_ready_fires_waiters() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    probe.healthy = True
    process = make(reactor, probe)
    got = result_of(process.ensure_ready())
    assert probe.calls == 1
    assert got == [None] and process.state is ModelState.READY


def test_polling_is_dense_for_a_second_then_backs_off_to_at_most_250ms() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    process = make(reactor, probe)
    got = result_of(process.ensure_ready())
    reactor.advance(0.005)
    assert probe.calls == 2  # probed again after 5 ms
    for _ in range(199):
        reactor.advance(0.005)
    assert probe.calls == 201  # every 5 ms for the first second: a start is seen at once
    for _ in range(100):
        reactor.advance(0.01)
    assert probe.calls <= 201 + 12  # then backed off: 1 s more took ~10 probes, not 200
    calls = probe.calls
    reactor.advance(0.25)
    assert probe.calls == calls + 1  # capped at 250 ms
    probe.healthy = True
    reactor.advance(0.25)
    assert got == [None]


def test_a_line_printed_while_starting_is_followed_by_a_probe_at_once() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    process = make(reactor, probe)
    got = result_of(process.ensure_ready())
    for _ in range(50):
        reactor.advance(0.1)  # 5 s into a slow load: probes are 250 ms apart
    calls = probe.calls
    probe.healthy = True
    reactor.last.output(b"main: server is listening on http://127.0.0.1:9 - all slots are idle\n",
                        fd=1)
    reactor.advance(0)
    assert probe.calls == calls + 1
    assert got == [None] and process.state is ModelState.READY
    reactor.last.output(b"srv  log_server_r: request: GET /health 200\n")
    reactor.advance(1)
    assert probe.calls == calls + 1  # once ready, output probes nothing


def test_health_timeout_fails_waiters_and_stops_the_process() -> None:
    reactor, signals = FakeProcessReactor(), SignalLog()
    process = make(reactor, signals=signals, health_timeout=15)
    got = result_of(process.ensure_ready())
    reactor.advance(14.9)
    assert got == []
    for _ in range(10):
        reactor.advance(0.1)
    assert len(got) == 1 and got[0].check(StartError)
    assert "timed out after 15s" in str(got[0].value)
    assert (process.pid, signal.SIGTERM) in signals.sent
    reactor.last.exit(0)
    assert process.state is ModelState.STOPPED


def test_exit_during_start_fails_at_once_with_status_and_last_output() -> None:
    reactor = FakeProcessReactor()
    process = make(reactor)
    got = result_of(process.ensure_ready())
    reactor.last.output(b"loading weights\nerror: model file not found\n")
    reactor.last.exit(2)
    assert len(got) == 1 and got[0].check(StartError)
    message = str(got[0].value)
    assert "exit status 2" in message and "error: model file not found" in message
    assert process.state is ModelState.STOPPED
    assert reactor.getDelayedCalls() == []  # no poll left running


def test_failed_start_is_retried_by_the_next_request() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    process = make(reactor, probe)
    process.ensure_ready().addErrback(lambda f: None)
    reactor.last.exit(1)
    probe.healthy = True
    got = result_of(process.ensure_ready())
    assert len(reactor.processes) == 2 and got == [None]


def test_concurrent_waiters_share_one_spawn_and_cancelling_one_keeps_the_start() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    process = make(reactor, probe)
    first, second = process.ensure_ready(), process.ensure_ready()
    first.addErrback(lambda f: None)
    first.cancel()
    got = result_of(second)
    probe.healthy = True
    reactor.advance(0.01)
    assert len(reactor.processes) == 1 and got == [None]


def test_stop_sends_sigterm_to_the_group_then_sigkill_after_unload_timeout() -> None:
    reactor, probe, signals = FakeProcessReactor(), ScriptedProbe(), SignalLog()
    probe.healthy = True
    process = make(reactor, probe, signals, unload_timeout=5.0)
    process.ensure_ready()
    pid = process.pid
    stopped = result_of(process.stop())
    assert signals.sent == [(pid, signal.SIGTERM)]
    reactor.advance(4.9)
    assert (pid, KILL_FAMILY) not in signals.sent
    reactor.advance(0.2)
    assert signals.sent[-1] == (pid, KILL_FAMILY)  # the keeper SIGKILLs the whole family
    assert stopped == []
    reactor.last.exit(signal=9)
    assert stopped == [None] and process.state is ModelState.STOPPED


def test_a_keeper_that_does_not_end_the_family_gets_its_group_sigkilled() -> None:
    reactor, probe, signals = FakeProcessReactor(), ScriptedProbe(), SignalLog()
    probe.healthy = True
    process = make(reactor, probe, signals, unload_timeout=1.0)
    process.ensure_ready()
    pid = process.pid
    stopped = result_of(process.stop())
    reactor.advance(1.1)
    assert signals.sent == [(pid, signal.SIGTERM), (pid, KILL_FAMILY)]
    reactor.advance(FAMILY_KILL_GRACE)
    assert signals.sent[-1] == (pid, signal.SIGKILL)
    reactor.last.exit(signal=9)
    assert stopped == [None] and reactor.getDelayedCalls() == []


def test_stop_completes_the_moment_the_process_exits_and_kills_leftovers() -> None:
    reactor, probe, signals = FakeProcessReactor(), ScriptedProbe(), SignalLog()
    probe.healthy = True
    process = make(reactor, probe, signals)
    process.ensure_ready()
    pid = process.pid
    stopped = result_of(process.stop())
    reactor.advance(0.05)
    reactor.last.exit(0)
    assert stopped == [None]
    assert signals.sent == [(pid, signal.SIGTERM), (pid, signal.SIGKILL)]  # group leftovers
    assert reactor.getDelayedCalls() == []  # the SIGKILL timer was cancelled


def test_crash_after_ready_is_noticed_and_next_request_restarts() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    probe.healthy = True
    process = make(reactor, probe)
    process.ensure_ready()
    seen: list = []
    process.add_observer(lambda p, old, new: seen.append((old, new)))
    reactor.last.exit(3)
    assert process.state is ModelState.STOPPED
    assert "exit status 3" in (process.last_error or "")
    assert seen == [(ModelState.READY, ModelState.STOPPED)]
    process.ensure_ready()
    assert len(reactor.processes) == 2


def test_request_during_stop_restarts_after_the_exit() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    probe.healthy = True
    process = make(reactor, probe)
    process.ensure_ready()
    process.stop()
    got = result_of(process.ensure_ready())
    assert got == [] and len(reactor.processes) == 1
    reactor.last.exit(0)
    assert len(reactor.processes) == 2 and got == [None]


def test_stop_during_start_fails_the_waiters() -> None:
    reactor, signals = FakeProcessReactor(), SignalLog()
    process = make(reactor, signals=signals)
    got = result_of(process.ensure_ready())
    process.stop()
    assert len(got) == 1 and got[0].check(StartError)
    assert signals.sent[0][1] == signal.SIGTERM
    reactor.last.exit(0)
    assert process.state is ModelState.STOPPED


def test_check_endpoint_none_is_ready_once_the_keeper_reports_the_server_pid() -> None:
    reactor, probe = FakeProcessReactor(), ScriptedProbe()
    process = make(reactor, probe, check_endpoint=None)
    got = result_of(process.ensure_ready())
    assert got == [] and process.model_pid is None  # not before the server's pid is known
    reactor.last.protocol.childDataReceived(3, b"4321\n")  # the keeper forked the server
    assert got == [None] and probe.calls == 0 and process.model_pid == 4321


def test_check_endpoint_none_is_ready_when_the_keeper_closes_its_pid_pipe_without_one() -> None:
    reactor = FakeProcessReactor()
    process = make(reactor, check_endpoint=None)
    got = result_of(process.ensure_ready())
    reactor.last.protocol.childConnectionLost(3)
    assert got == [None] and process.model_pid is None


def test_cmd_stop_runs_with_pid_and_falls_back_to_sigterm_when_it_fails() -> None:
    reactor, probe, signals = FakeProcessReactor(), ScriptedProbe(), SignalLog()
    probe.healthy = True
    process = make(reactor, probe, signals, cmd_stop="docker stop --pid ${PID}")
    process.ensure_ready()
    pid = process.pid
    process.stop()
    stopper = reactor.last
    assert stopper.args == ["docker", "stop", "--pid", str(pid)]
    assert signals.sent == []
    stopper.exit(1)
    assert signals.sent == [(pid, signal.SIGTERM)]


def test_output_lines_are_kept_in_a_bounded_log() -> None:
    reactor = FakeProcessReactor()
    process = make(reactor)
    process.ensure_ready()
    reactor.last.output(b"partial ", fd=1)
    reactor.last.output(b"line\nnext\n", fd=1)
    assert process.output.tail(2) == ["partial line", "next"]
    reactor.last.output(b"x" * 300_000 + b"\n")
    assert len(process.output.text()) <= 110 * 1024


def test_progress_output_extends_the_readiness_deadline_when_configured() -> None:
    from llamaswap.supervision import SupervisionConfig
    reactor = FakeProcessReactor()
    process = make(reactor, health_timeout=15,
                   supervision=SupervisionConfig(progress_resets_timeout=True))
    got = result_of(process.ensure_ready())
    reactor.advance(10)
    reactor.last.output(b"load_tensors: 60% done\n")
    for _ in range(56):
        reactor.advance(0.25)  # t = 24: past the plain deadline, within the extended one
    assert got == []
    for _ in range(12):
        reactor.advance(0.25)  # t = 27 > 10 + 15
    assert len(got) == 1 and got[0].check(StartError)


def test_without_progress_reset_the_deadline_is_fixed() -> None:
    reactor = FakeProcessReactor()
    process = make(reactor, health_timeout=15)
    got = result_of(process.ensure_ready())
    reactor.advance(10)
    reactor.last.output(b"load_tensors: 60% done\n")
    for _ in range(24):
        reactor.advance(0.25)
    assert len(got) == 1 and got[0].check(StartError)
