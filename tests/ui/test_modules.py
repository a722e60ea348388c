"""The UI's pure modules, run in Chromium (no Node toolchain): markdown stays inert, ANSI
colours, secret masking, CSV export, activity rows, timeline phases and routes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import Server


@pytest.fixture
def run(server: Server, page: Any) -> Any:
    """Evaluates an async function body with the UI's modules imported as ``m.<name>``."""
    page.goto(server.ui + "#/settings")

    def evaluate(body: str, *modules: str, arg: Any = None) -> Any:
        imports = ", ".join(f"{name.replace('-', '_').replace('/', '_')}: "
                            f"await import('./js/{name}.js')" for name in modules)
        return page.evaluate(f"async (arg) => {{ const m = {{ {imports} }}; {body} }}", arg)

    return evaluate


def test_markdown_builds_elements_and_never_html(run: Any) -> None:
    source = "\n".join([
        "# Title", "some **bold** and *em* and `x < y`",
        '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>',
        "- one", "- two", "1. first", "```js", "if (a < b) { alert(1) }", "```",
        "[ok](https://example.org) [bad](javascript:alert(1))", "> quoted"])
    html = run("""
        const box = document.createElement('div');
        box.append(m.markdown.renderMarkdown(arg));
        document.body.append(box);
        await new Promise((r) => setTimeout(r, 50));
        return {html: box.innerHTML, pwned: window.pwned ?? null,
                tags: [...box.querySelectorAll('*')].map((n) => n.tagName.toLowerCase())};
    """, "markdown", arg=source)
    assert html["pwned"] is None
    assert "script" not in html["tags"] and "img" not in html["tags"]
    assert "&lt;img src=x onerror" in html["html"]  # shown as text
    assert {"strong", "em", "code", "ul", "ol", "li", "pre", "blockquote", "a"} <= set(html["tags"])
    assert 'href="https://example.org"' in html["html"]
    assert html["html"].count("<a ") == 1  # the javascript: link stays text
    assert "bad (javascript:alert(1))" in html["html"]


def test_ansi_colours_become_classes(run: Any) -> None:
    line = "plain \x1b[1;31mred bold\x1b[0m \x1b[38;5;200mx\x1b[2Kend\x1b[0m \x1b[38;5;9;101mbright"
    runs = run("return m.ansi.ansiRuns(arg);", "ansi", arg=line)
    assert runs == [
        {"text": "plain ", "classes": [], "style": {}},
        {"text": "red bold", "classes": ["ansi-fg-red", "ansi-bold"], "style": {}},
        {"text": " ", "classes": [], "style": {}},
        {"text": "x", "classes": [], "style": {"color": "rgb(255, 0, 215)"}},
        {"text": "end", "classes": [], "style": {"color": "rgb(255, 0, 215)"}},  # 2K: dropped
        {"text": " ", "classes": [], "style": {}},
        # palette 0-15 are the basic colours' classes; 100-107 the (bright) backgrounds
        {"text": "bright", "classes": ["ansi-fg-bright-red", "ansi-bg-red"], "style": {}},
    ]


def test_ansi_256_and_true_colours_become_inline_colours_from_numbers_only(run: Any) -> None:
    lines = {
        "semicolons": "\x1b[38;2;80;200;120mtrue\x1b[48;2;255;255;255mon white\x1b[39;49mplain",
        "colons": "\x1b[38:2::10:200:30ma\x1b[38:2:250:100:0mb\x1b[48:5:21mc",
        "malformed": "\x1b[0m".join(["\x1b[38;2;300;0;0mbig", "\x1b[38;2;1;2mshort",
                                     "\x1b[38;5mnone", "\x1b[38;7;1mbold",
                                     "\x1b[38;5;x);background:url(//e)mtext"]),
        "dark": "\x1b[38;2;20;20;20mdark on the log's black",
    }
    result = run("""
        const runs = (line) => m.ansi.ansiRuns(line).map((r) => [r.text, r.style, r.classes]);
        const p = m.ansi.paletteColour;
        const out = Object.fromEntries(Object.entries(arg).map(([k, line]) => [k, runs(line)]));
        return {...out,
          palette: [p(16), p(196), p(231), p(232), p(255), p(4), p(12), p(256), p(-1), p(1.5)],
          contrast: m.ansi.contrast(m.ansi.readable([20, 20, 20], m.ansi.LOG_BG), m.ansi.LOG_BG),
          light: m.ansi.readable([250, 250, 200], [255, 255, 255])};
    """, "ansi", arg=lines)
    assert result["palette"] == [
        {"rgb": [0, 0, 0]}, {"rgb": [255, 0, 0]}, {"rgb": [255, 255, 255]}, {"rgb": [8, 8, 8]},
        {"rgb": [238, 238, 238]}, {"name": "blue"}, {"name": "bright-blue"}, None, None, None]
    # a light background: the default text colour is darkened until it reads (WCAG AA)
    (true, on_white, plain) = result["semicolons"]
    assert true == ["true", {"color": "rgb(80, 200, 120)"}, []]
    assert on_white[0] == "on white" and on_white[1]["backgroundColor"] == "rgb(255, 255, 255)"
    assert on_white[1]["color"] != "rgb(218, 218, 222)"
    assert plain == ["plain", {}, []]
    assert result["colons"] == [
        ["a", {"color": "rgb(10, 200, 30)"}, []], ["b", {"color": "rgb(250, 100, 0)"}, []],
        # orange on blue reads below 4.5:1: it is mixed towards white until it does
        ["c", {"color": "rgb(253, 178, 128)", "backgroundColor": "rgb(0, 0, 255)"}, []]]
    # Out-of-range, short or unknown forms set no colour; a 38;7 is not a colour form, so the
    # 7 and 1 after it are read as codes; "ESC[38;5;x" is some other escape (dropped) and what
    # follows it is text, never a style.
    malformed = result["malformed"]
    assert malformed[:3] == [["big", {}, []], ["short", {}, []], ["none", {}, []]]
    assert malformed[3] == ["bold", {}, ["ansi-bold"]]
    assert malformed[4] == [");background:url(//e)mtext", {}, []]
    ((_, style, _),) = result["dark"]
    assert style["color"] != "rgb(20, 20, 20)"
    assert result["contrast"] >= 4.5
    assert result["light"] != [250, 250, 200] and max(result["light"]) < 200


def test_ansi_lines_are_text_with_cssom_colours(run: Any) -> None:
    result = run("""
        const line = m.ansi.ansiLine(arg);
        document.body.append(line);
        const spans = [...line.querySelectorAll('span')];
        return {html: line.innerHTML, tags: [...line.querySelectorAll('*')].map((n) => n.tagName),
                colours: spans.map((s) => [s.textContent, getComputedStyle(s).color,
                                           s.getAttribute('style')])};
    """, "ansi", arg="\x1b[38;5;208m<b>orange</b>\x1b[0m \x1b[38;2;0;255;0m\"><img src=x>")
    assert result["tags"] == ["SPAN", "SPAN"]
    assert "&lt;b&gt;orange&lt;/b&gt;" in result["html"]
    assert result["colours"] == [
        ["<b>orange</b>", "rgb(255, 135, 0)", "color: rgb(255, 135, 0);"],
        ['"><img src=x>', "rgb(0, 255, 0)", "color: rgb(0, 255, 0);"]]


def test_secrets_are_masked_in_the_config_view(run: Any) -> None:
    masked = run("""return m.model_data.maskSecrets({
        cmd: 'llama-server --api-key s3cret --port 9 HF_TOKEN=abc --token-delay 0.5 -m x.gguf',
        env: ['OPENAI_API_KEY=sk-1', 'PATH=/bin'], apiKey: 'k', headers: 'Bearer tok', ttl: 5,
        max_tokens: 'kept', hf_token: 'x'});""", "model-data")
    assert masked == {
        "cmd": "llama-server --api-key •••••• --port 9 HF_TOKEN=•••••• --token-delay 0.5 -m x.gguf",
        "env": ["OPENAI_API_KEY=••••••", "PATH=/bin"], "apiKey": "••••••",
        "headers": "Bearer ••••••", "ttl": 5, "max_tokens": "kept", "hf_token": "••••••"}


def test_prometheus_text_is_parsed(run: Any) -> None:
    samples = run("""return m.model_data.parsePrometheus([
        '# HELP x y', 'llamaswap_swaps_total{model="a",reason="ttl"} 3.0',
        'llamaswap_model_load_seconds_sum{model="a"} 4.5', 'up 1'].join('\\n'));""", "model-data")
    assert samples == [
        {"name": "llamaswap_swaps_total", "labels": {"model": "a", "reason": "ttl"}, "value": 3},
        {"name": "llamaswap_model_load_seconds_sum", "labels": {"model": "a"}, "value": 4.5},
        {"name": "up", "labels": {}, "value": 1}]


def test_csv_export_quotes_and_defuses_formulas(run: Any) -> None:
    text = run("""return m.activity_data.toCSV([{id: 1, timestamp: 't', model: 'a,b',
        req_path: '=cmd()', resp_status_code: 200, tokens: {input_tokens: 3}, duration_ms: 5,
        error_msg: 'said "no"'}]);""", "activity-data")
    header, row, end = text.split("\r\n")
    assert header.startswith("id,timestamp,model,req_path,resp_status_code")
    assert row == "1,t,\"a,b\",'=cmd(),200,,,3,,,,5,\"said \"\"no\"\"\""
    assert end == ""


def test_activity_rows_filters_and_captures(run: Any) -> None:
    result = run("""
        const old = {id: 4, ts: 1700000000, model: 'm', endpoint: '/v1/embeddings', method: 'POST',
                     status: 503, duration_ms: 9, input_tokens: 2, output_tokens: null,
                     cached_tokens: 1, prompt_per_second: 5, tokens_per_second: null,
                     client: '1.2.3.4', error: '503 down', has_capture: 0};
        const row = m.activity_data.normalizeRow(old);
        const same = m.activity_data.normalizeRow(row);
        const f = (filters) => m.activity_data.applyLocalFilters([row], filters).length;
        return {row, same: same === row,
                error: f({status: 'error'}), ok: f({status: '2xx'}), s5: f({status: '5xx'}),
                path: f({path: 'EMBED'}), other: f({model: 'n'}),
                before: f({to: '2023-11-14T00:00'}), after: f({from: '2023-11-13T00:00'}),
                b64: m.activity_data.decodeBody(btoa('{"a":1}')),
                text: m.activity_data.decodeBody('{"a":1}'),
                query: m.activity_data.activityQuery(
                  {model: 'm', from: '2026-01-01T10:00', path: 'v1'}, 2, 50).toString()};
    """, "activity-data")
    assert result["row"]["req_path"] == "/v1/embeddings"
    assert result["row"]["resp_status_code"] == 503
    assert result["row"]["tokens"]["cache_tokens"] == 1
    assert result["row"]["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert result["same"] is True
    counts = [result[k] for k in ("error", "ok", "s5", "path", "other")]
    assert counts == [1, 0, 1, 1, 0]
    assert (result["before"], result["after"]) == (0, 1)
    assert result["b64"] == '{"a":1}' and result["text"] == '{"a":1}'
    assert result["query"].startswith("page=2&limit=50&sort=id&order=desc&model=m&start=2026-")
    assert result["query"].endswith("&path=v1")


def test_timeline_phases_and_segments(run: Any) -> None:
    result = run("""
        const p = m.live.phaseOf;
        const phases = [p({state: 'ready', inFlight: 0}), p({state: 'ready', inFlight: 2}),
          p({state: 'stopping', inFlight: 1}), p({state: 'stopping'}), p({state: 'starting'}),
          p({state: 'stopped', lastError: 'exit 1'}, 'starting'), p({state: 'stopped'}, 'ready'),
          // llamaswap's stopCause: a crash or a failed start seen happening is a failure
          p({state: 'stopped', stopCause: 'crash'}, 'ready'),
          p({state: 'stopped', stopCause: 'crash'}, 'failed'),
          p({state: 'stopped', stopCause: 'start_failed'}, 'starting'),
          p({state: 'stopped', stopCause: 'crash'}),
          p({state: 'stopped', stopCause: 'crash'}, 'stopped'),
          p({state: 'stopped', stopCause: 'swap', lastError: 'x'}, 'starting')];
        const lane = [{t: 0, phase: 'starting'}, {t: 10, phase: 'ready'}, {t: 20, phase: 'serving'},
                      {t: 30, phase: 'stopped'}, {t: 40, phase: 'failed'}];
        return {phases, segments: m.views_timeline.segments(lane, 5, 45)};
    """, "live", "views/timeline")
    assert result["phases"] == ["ready", "serving", "draining", "stopping", "starting", "failed",
                                "stopped", "failed", "failed", "failed", "stopped", "stopped",
                                "stopped"]
    assert result["segments"] == [
        {"from": 5, "to": 10, "phase": "starting", "detail": ""},
        {"from": 10, "to": 20, "phase": "ready", "detail": ""},
        {"from": 20, "to": 30, "phase": "serving", "detail": ""},
        {"from": 40, "to": 45, "phase": "failed", "detail": ""}]


def test_routes_and_ttl_countdown(run: Any) -> None:
    result = run("""
        const r = m.main.parseRoute;
        const ttl = m.views_models.ttlText;
        return {routes: [r(''), r('#/models'), r('#/models/org%2Fx/y'), r('#/nope'),
                         r('#/playground/rerank')],
                ttl: [ttl({ttl: 0, state: 'ready'}), ttl({ttl: 60, state: 'stopped'}),
                      ttl({ttl: 60, state: 'ready', inFlight: 1}, 0, 0),
                      ttl({ttl: 60, state: 'ready', inFlight: 0}, 1000, 11000),
                      ttl({ttl: 60, state: 'ready', inFlight: 0}, 1000, 99000)]};
    """, "main", "views/models")
    assert result["routes"] == [
        {"page": "activity", "params": {"rest": []}}, {"page": "models", "params": {"rest": []}},
        {"page": "model", "params": {"id": "org/x/y"}},
        {"page": "activity", "params": {"rest": []}},
        {"page": "playground", "params": {"rest": ["rerank"]}}]
    assert result["ttl"] == ["no TTL", "60 s", "60 s (busy)", "50 s left", "unloading"]


def test_a_crash_is_recorded_with_its_reason(run: Any) -> None:
    lane = run("""
        const model = (state, extra = {}) => ({id: 'x', name: 'x', state, inFlight: 0, ...extra});
        const crashed = {stopCause: 'crash', lastError: 'exit status 3',
                         stopReason: 'exited unexpectedly: exit status 3'};
        m.live.handle('modelStatus', [model('starting')]);
        m.live.handle('modelStatus', [model('ready')]);
        m.live.handle('modelStatus', [model('stopped', crashed)]);
        m.live.handle('modelStatus', [model('stopped', crashed)]);
        return m.live.live.lanes.get('x').map((c) => [c.phase, c.detail]);
    """, "live")
    assert lane == [["starting", ""], ["ready", ""],
                    ["failed", "exited unexpectedly: exit status 3"]]


def test_sorting_helpers(run: Any) -> None:
    result = run("""
        const s = m.sorting;
        const rows = [{id: 'b', n: 2}, {id: 'a10', n: null}, {id: 'a9', n: 10}, {id: 'C', n: 2}];
        const ids = (sort) => s.sortRows(rows, sort, (r, k) => r[k]).map((r) => r.id);
        const store = (text) => ({getItem: () => text,
                                  setItem: (k, v) => { store.saved = [k, v]; }});
        const fallback = {key: 'id', dir: 'desc'};
        s.saveSort('models', {key: 'n', dir: 'asc', extra: 1}, store(null));
        return {
          next: [s.nextSort({key: 'id', dir: 'desc'}, 'id'),
                 s.nextSort({key: 'id', dir: 'asc'}, 'id'),
                 s.nextSort({key: 'id', dir: 'desc'}, 'n'),
                 s.nextSort({key: null, dir: 'asc'}, 'n')],
          byId: ids({key: 'id', dir: 'asc'}), byIdDown: ids({key: 'id', dir: 'desc'}),
          byN: ids({key: 'n', dir: 'asc'}), byNDown: ids({key: 'n', dir: 'desc'}),
          none: ids({key: null, dir: 'asc'}),
          loaded: [s.loadSort('t', ['id', 'n'], fallback, store('{"key":"n","dir":"asc"}')),
                   s.loadSort('t', ['id', 'n'], fallback, store('{"key":"evil","dir":"asc"}')),
                   s.loadSort('t', ['id', 'n'], fallback, store('{"key":"n","dir":"sideways"}')),
                   s.loadSort('t', ['id', 'n'], fallback, store('not json'))],
          saved: store.saved,
        };
    """, "sorting")
    assert result["next"] == [{"key": "id", "dir": "asc"}, {"key": "id", "dir": "desc"},
                              {"key": "n", "dir": "asc"}, {"key": "n", "dir": "asc"}]
    assert result["byId"] == ["a9", "a10", "b", "C"]  # numerals as numbers, case ignored
    assert result["byIdDown"] == ["C", "b", "a10", "a9"]
    assert result["byN"] == ["b", "C", "a9", "a10"]  # ties keep their order, null last
    assert result["byNDown"] == ["a9", "b", "C", "a10"]  # null still last
    assert result["none"] == ["b", "a10", "a9", "C"]
    assert result["loaded"] == [{"key": "n", "dir": "asc"}, {"key": "id", "dir": "desc"},
                                {"key": "id", "dir": "desc"}, {"key": "id", "dir": "desc"}]
    assert result["saved"] == ["llamaswap.sort.models", '{"key":"n","dir":"asc"}']


def test_seconds_are_rounded_before_they_are_split(run: Any) -> None:
    texts = run("return arg.map(m.dom.seconds);", "dom", arg=[0.4, 59.4, 59.6, 61.2, 299.6, -3])
    assert texts == ["0 s", "59 s", "1 min 0 s", "1 min 1 s", "5 min 0 s", "0 s"]


def test_slot_cache_events_update_the_models_cache_note(run: Any) -> None:
    notes = run("""
        const note = () => m.views_models.cacheNote(m.live.live.models[0].slotCache);
        m.live.handle('modelStatus', [{id: 'a', name: '', state: 'ready',
                                       slotCache: {bytes: 1048576, tokens: 10, last: null}}]);
        const notes = [note()];
        m.live.handle('slotCache', {model: 'a', action: 'verify', helped: false,
                                    cached_tokens: 0, prompt_tokens: 1500, restored_tokens: 1510});
        notes.push(note());
        m.live.handle('slotCache', {model: 'a', action: 'save', slots: 1, tokens: 20,
                                    bytes: 3 * 1048576, ms: 4});
        notes.push(note());
        m.live.handle('slotCache', {model: 'a', action: 'verify', helped: true,
                                    cached_tokens: 1499, prompt_tokens: 1500});
        notes.push(note());
        m.live.handle('slotCache', {model: 'a', action: 'error', operation: 'restore',
                                    error: 'took longer than 30s'});
        notes.push(note());
        m.live.handle('slotCache', {model: 'other', action: 'save', bytes: 1});  // not listed
        return notes;
    """, "live", "views/models")
    assert notes == ["cache 1.0 MiB", "cache 1.0 MiB, restore not reused", "cache 3.0 MiB",
                     "cache 3.0 MiB, restore reused (1499 of 1500 tokens)",
                     "cache 3.0 MiB, restore failed"]
