// Activity, the landing page: requests in flight (live, cancellable), speed histograms,
// and the request table with filters, bounded paging, export and a capture viewer.

import { cancelInflight, getCapture, getJSON } from "../api.js";
import {
  activityQuery, applyLocalFilters, decodeBody, DEFAULT_SORT, EXPORT_MAX_ROWS, normalizeRow, normalizeStats,
  PAGE_SIZES, pretty, SORT_COLUMNS, toCSV,
} from "../activity-data.js";
import { histogram } from "../charts.js";
import { bytes, debounce, download, el, emptyRow, errorBox, header, ms, num, time } from "../dom.js";
import { live, on } from "../live.js";
import { loadSort, saveSort, sortableHeader } from "../sorting.js";

export function mount(view) {
  const filters = { model: "", status: "", path: "", from: "", to: "" };
  let page = 1;
  let limit = 25;
  let totalPages = 1;
  let loading = 0;
  const sort = loadSort("activity", SORT_COLUMNS.map(([, key]) => key), DEFAULT_SORT);

  const modelSelect = el("select", { id: "activity-model", name: "model" });
  const statusSelect = el("select", { id: "activity-status", name: "status" },
    el("option", { value: "" }, "any status"), el("option", { value: "2xx" }, "2xx success"),
    el("option", { value: "4xx" }, "4xx client error"), el("option", { value: "5xx" }, "5xx server error"),
    el("option", { value: "error" }, "any error"));
  const pathInput = el("input", { id: "activity-path", name: "path", type: "search", placeholder: "e.g. chat/completions" });
  const fromInput = el("input", { id: "activity-from", name: "from", type: "datetime-local" });
  const toInput = el("input", { id: "activity-to", name: "to", type: "datetime-local" });
  const sizeSelect = el("select", { id: "activity-limit", name: "limit" },
    PAGE_SIZES.map((n) => el("option", { value: n }, String(n))));
  const prev = el("button", { type: "button", class: "small", id: "activity-prev" }, "Previous page");
  const next = el("button", { type: "button", class: "small", id: "activity-next" }, "Next page");
  const pageInfo = el("span", { id: "activity-page", class: "muted", "aria-live": "polite" });
  const inflightBody = el("tbody");
  const statsBox = el("div", { id: "stats", class: "cards" });
  const tableBody = el("tbody");
  const tableState = el("div", { id: "activity-state" });
  const exportStatus = el("span", { class: "muted", role: "status" });
  const dialog = el("dialog", { id: "capture", "aria-labelledby": "capture-title" });
  const caption = el("caption", { class: "sr-only" });
  const describeSort = () => {
    const label = SORT_COLUMNS.find(([, key]) => key === sort.key)[0];
    caption.textContent = `Finished requests, by ${label}, ${sort.dir === "asc" ? "ascending" : "descending"}`;
  };
  describeSort();

  const field = (label, control) => el("label", { class: "field" }, el("span", {}, label), control);
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Activity")),
    el("section", { "aria-labelledby": "inflight-title" },
      el("h2", { id: "inflight-title" }, "In flight"),
      el("div", { class: "table-wrap" }, el("table", { id: "inflight" },
        el("caption", { class: "sr-only" }, "Requests being answered now"),
        el("thead", {}, el("tr", {}, ["ID", "Model", "Request", "User agent", "Status", "Sent", "Elapsed", "Actions"]
          .map((h) => el("th", { scope: "col" }, h)))),
        inflightBody))),
    el("section", { "aria-labelledby": "speed-title" },
      el("h2", { id: "speed-title" }, "Speeds"), statsBox),
    el("section", { "aria-labelledby": "requests-title" },
      el("h2", { id: "requests-title" }, "Requests"),
      el("form", { class: "filters", id: "activity-filters", onsubmit: (e) => e.preventDefault() },
        field("Model", modelSelect), field("Status", statusSelect), field("Path contains", pathInput),
        field("From", fromInput), field("To", toInput), field("Rows per page", sizeSelect),
        el("button", { type: "reset", class: "small", onclick: () => setTimeout(readFilters, 0) }, "Clear filters")),
      el("div", { class: "toolbar" }, prev, pageInfo, next,
        el("span", { class: "spacer" }),
        el("button", { type: "button", class: "small", id: "export-csv", onclick: () => exportRows("csv") }, "Export CSV"),
        el("button", { type: "button", class: "small", id: "export-json", onclick: () => exportRows("json") }, "Export JSON"),
        exportStatus),
      tableState,
      el("div", { class: "table-wrap" }, el("table", { id: "activity" },
        caption, el("thead", {}, sortableHeader([...SORT_COLUMNS.map(([label, key]) => ({ label, key })),
          { label: "Capture" }], sort, (chosen) => { saveSort("activity", chosen); describeSort(); page = 1; loadTable(); })),
        tableBody))),
    dialog);

  // -- in flight ----------------------------------------------------------------------------

  const cancelStates = new Map(); // request id -> what its Cancel button says, across re-renders
  const elapsedOf = (r) => (r.elapsed_ms || 0) + (performance.now() - r.seenAt);

  /** Elapsed times tick in place, so keyboard focus on a Cancel button stays put. */
  function tickInflight() {
    for (const tr of inflightBody.querySelectorAll("tr[data-id]")) {
      const r = live.inflight.get(tr.dataset.id);
      if (r) tr.querySelector(".elapsed").textContent = ms(elapsedOf(r));
    }
  }

  function renderInflight() {
    const focusedId = inflightBody.contains(document.activeElement)
      ? document.activeElement.closest("tr")?.dataset.id : null;
    drawInflight();
    if (focusedId) inflightBody.querySelector(`tr[data-id="${CSS.escape(focusedId)}"] button`)?.focus();
  }

  function drawInflight() {
    const rows = [...live.inflight.values()].sort((a, b) => String(a.timestamp).localeCompare(String(b.timestamp)));
    for (const id of cancelStates.keys()) if (!live.inflight.has(id)) cancelStates.delete(id);
    if (!rows.length) { inflightBody.replaceChildren(emptyRow(8, "nothing in flight")); return; }
    inflightBody.replaceChildren(...rows.map((r) => {
      const elapsed = elapsedOf(r);
      const agent = header(r.req_headers, "user-agent") || r.user_agent || "—";
      const cancel = el("button", { type: "button", class: "small danger cancel",
                                    "aria-label": `Cancel request ${r.id}` }, "Cancel");
      const show = (state) => {
        cancelStates.set(String(r.id), state);
        cancel.textContent = state.text;
        cancel.disabled = state.disabled;
        if (state.title) cancel.title = state.title; else cancel.removeAttribute("title");
      };
      if (cancelStates.has(String(r.id))) show(cancelStates.get(String(r.id)));
      cancel.addEventListener("click", async () => {
        if (cancel.getAttribute("aria-busy") === "true") return;
        cancel.setAttribute("aria-busy", "true"); // not disabled: that would drop keyboard focus
        try { await cancelInflight(r.id); show({ text: "Cancelling", disabled: true }); }
        catch (error) { show({ text: "Cancel failed", disabled: false, title: error.message }); }
        finally { cancel.removeAttribute("aria-busy"); }
      });
      return el("tr", { "data-id": r.id },
        el("td", {}, r.id), el("td", {}, r.model),
        el("td", {}, (r.method || "") + " " + (r.req_path || "")),
        el("td", { class: "ua" }, agent),
        el("td", {}, r.status ?? (r.resp_bytes ? "streaming" : "waiting")),
        el("td", { class: "num" }, bytes(r.resp_bytes)),
        el("td", { class: "elapsed" }, ms(elapsed)), el("td", {}, cancel));
    }));
  }

  // -- stats and table ----------------------------------------------------------------------

  function fillModels() {
    const current = modelSelect.value;
    modelSelect.replaceChildren(el("option", { value: "" }, "all models"),
      ...live.models.map((m) => el("option", { value: m.id }, m.id)));
    if ([...modelSelect.options].some((o) => o.value === current)) modelSelect.value = current;
  }

  async function loadStats() {
    const query = filters.model ? "?model=" + encodeURIComponent(filters.model) : "";
    try {
      const stats = normalizeStats(await getJSON("api/metrics/stats" + query));
      statsBox.replaceChildren(
        el("div", { class: "card" }, el("h3", {}, "Totals"),
          el("dl", { class: "facts" },
            el("dt", {}, "requests"), el("dd", {}, num(stats.total_requests)),
            el("dt", {}, "prompt tokens"), el("dd", {}, num(stats.total_input_tokens)),
            el("dt", {}, "generated tokens"), el("dd", {}, num(stats.total_output_tokens)),
            el("dt", {}, "cached tokens"), el("dd", {}, num(stats.total_cache_tokens)))),
        speedCard("Prompt processing", stats.prompt_histogram, "prompt-histogram"),
        speedCard("Generation", stats.gen_histogram, "gen-histogram"));
    } catch (error) {
      statsBox.replaceChildren(errorBox(error, loadStats));
    }
  }

  function speedCard(title, data, id) {
    return el("div", { class: "card", id },
      el("h3", {}, title + " speed"),
      data ? el("p", { class: "muted" }, `p50 ${num(data.p50, 1)} · p95 ${num(data.p95, 1)} · p99 ${num(data.p99, 1)} tokens/s`)
        : el("p", { class: "muted" }, "no speeds recorded"),
      histogram(data, { label: `${title} speed histogram` }));
  }

  async function loadTable() {
    const mine = ++loading;
    tableState.replaceChildren();
    let result;
    try {
      result = await getJSON("api/metrics/activity?" + activityQuery(filters, page, limit, sort));
    } catch (error) {
      if (mine !== loading) return;
      tableBody.replaceChildren();
      tableState.replaceChildren(errorBox(error, loadTable));
      pageInfo.textContent = "";
      return;
    }
    if (mine !== loading) return;
    totalPages = Math.max(1, result.total_pages || 1);
    if (page > totalPages) { page = totalPages; loadTable(); return; }
    const rows = applyLocalFilters((result.data || []).map(normalizeRow), filters);
    pageInfo.textContent = `page ${page} of ${totalPages} (${num(result.total)} requests)`;
    prev.disabled = page <= 1;
    next.disabled = page >= totalPages;
    tableBody.replaceChildren(...(rows.length ? rows.map(row) : [emptyRow(12, "no requests match")]));
  }

  function row(r) {
    const t = r.tokens || {};
    const failed = r.resp_status_code >= 400 || r.error_msg;
    return el("tr", { "data-id": r.id },
      el("td", {}, r.id), el("td", {}, time(r.timestamp)), el("td", {}, r.model),
      el("td", {}, r.req_path),
      el("td", { class: failed ? "error" : "", title: r.error_msg || null }, r.resp_status_code ?? "—",
        r.error_msg ? el("span", { class: "sr-only" }, " " + r.error_msg) : null),
      el("td", { class: "num" }, num(t.cache_tokens)), el("td", { class: "num" }, num(t.input_tokens)),
      el("td", { class: "num" }, num(t.output_tokens)),
      el("td", { class: "num" }, num(t.prompt_per_second, 1)),
      el("td", { class: "num" }, num(t.tokens_per_second, 1)),
      el("td", { class: "num" }, ms(r.duration_ms)),
      el("td", {}, r.has_capture
        ? el("button", { type: "button", class: "small view-capture", "aria-label": `View capture of request ${r.id}`,
                         onclick: () => showCapture(r.id) }, "View")
        : el("span", { class: "muted" }, "—")));
  }

  async function exportRows(format) {
    exportStatus.textContent = "exporting…";
    const rows = [];
    try {
      for (let p = 1; rows.length < EXPORT_MAX_ROWS; p += 1) {
        const result = await getJSON("api/metrics/activity?" + activityQuery(filters, p, 100, sort));
        rows.push(...applyLocalFilters((result.data || []).map(normalizeRow), filters));
        if (p >= (result.total_pages || 1)) break;
      }
    } catch (error) {
      exportStatus.textContent = "export failed: " + error.message;
      return;
    }
    const kept = rows.slice(0, EXPORT_MAX_ROWS);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    if (format === "csv") download(`llamaswap-activity-${stamp}.csv`, toCSV(kept), "text/csv");
    else download(`llamaswap-activity-${stamp}.json`, JSON.stringify(kept, null, 2), "application/json");
    exportStatus.textContent = `exported ${kept.length} rows` + (rows.length > EXPORT_MAX_ROWS ? ` (the first ${EXPORT_MAX_ROWS} in the table's order)` : "");
  }

  // -- capture viewer -----------------------------------------------------------------------

  async function showCapture(id) {
    const close = el("button", { type: "button", class: "small", onclick: () => dialog.close() }, "Close");
    dialog.replaceChildren(el("div", { class: "dialog-head" }, el("h2", { id: "capture-title" }, `Capture of request ${id}`), close),
      el("p", { class: "muted" }, "loading…"));
    dialog.showModal();
    close.focus();
    try {
      const capture = await getCapture(id);
      dialog.replaceChildren(dialog.firstChild,
        el("h3", {}, "Request: ", (capture.req_method || "") + " " + (capture.req_path || "")),
        headersTable(capture.req_headers, "Request headers"),
        el("pre", { class: "body", tabindex: 0, "aria-label": "Request body" }, pretty(decodeBody(capture.req_body))),
        el("h3", {}, "Response"),
        headersTable(capture.resp_headers, "Response headers"),
        el("pre", { class: "body", tabindex: 0, "aria-label": "Response body" }, pretty(decodeBody(capture.resp_body))));
    } catch (error) {
      dialog.replaceChildren(dialog.firstChild, errorBox(error, () => showCapture(id)));
    }
  }

  function headersTable(headers, caption) {
    const entries = Object.entries(headers || {});
    return el("table", { class: "headers" }, el("caption", {}, caption),
      el("tbody", {}, entries.length ? entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v)))
        : emptyRow(2, "none")));
  }

  // -- wiring -------------------------------------------------------------------------------

  function readFilters() {
    Object.assign(filters, { model: modelSelect.value, status: statusSelect.value,
                             path: pathInput.value.trim(), from: fromInput.value, to: toInput.value });
    limit = Number(sizeSelect.value) || 25;
    page = 1;
    loadTable();
    loadStats();
  }
  const readFiltersSoon = debounce(readFilters, 300);
  for (const control of [modelSelect, statusSelect, fromInput, toInput, sizeSelect]) control.addEventListener("change", readFilters);
  pathInput.addEventListener("input", readFiltersSoon);
  prev.addEventListener("click", () => { if (page > 1) { page -= 1; loadTable(); } });
  next.addEventListener("click", () => { if (page < totalPages) { page += 1; loadTable(); } });

  // A finished request refreshes the table and stats, at most every 750 ms.
  const refresh = debounce(() => { loadTable(); loadStats(); }, 750);
  const ticker = setInterval(tickInflight, 1000);
  const offs = [on("inflight", renderInflight), on("models", fillModels), on("activity", refresh)];
  fillModels();
  renderInflight();
  loadTable();
  loadStats();
  return () => { clearInterval(ticker); refresh.cancel(); readFiltersSoon.cancel(); offs.forEach((off) => off()); };
}
