// Pure helpers for activity rows (llama-swap's ActivityLogEntry shape): filters as query
// parameters, the client-side part of the filters, and CSV/JSON export.

export const PAGE_SIZES = [25, 50, 100];
export const EXPORT_MAX_ROWS = 1000;

/** The request table's sortable columns: header -> llama-swap's sort key for
 *  /api/metrics/activity (`sort=`, with `order=asc|desc`). */
export const SORT_COLUMNS = [
  ["ID", "id"], ["Time", "time"], ["Model", "model"], ["Path", "req_path"], ["Status", "resp_status_code"],
  ["Cached", "cached"], ["Prompt", "prompt"], ["Generated", "generated"], ["Prompt t/s", "prompt_speed"],
  ["Gen t/s", "gen_speed"], ["Duration", "duration"],
];
export const DEFAULT_SORT = { key: "id", dir: "desc" };

/** Filter form values (and the sort) -> /api/metrics/activity query (start/end as RFC 3339). */
export function activityQuery(filters, page, limit, sort = DEFAULT_SORT) {
  const query = new URLSearchParams({ page: String(page), limit: String(limit),
                                      sort: sort.key, order: sort.dir });
  if (filters.model) query.set("model", filters.model);
  if (filters.from) query.set("start", new Date(filters.from).toISOString());
  if (filters.to) query.set("end", new Date(filters.to).toISOString());
  if (filters.status) query.set("status", filters.status);
  if (filters.path) query.set("path", filters.path);
  return query;
}

/** The status filter: "2xx", "4xx", "5xx" or "error" (any 4xx/5xx or an error message). */
export function statusMatches(row, status) {
  const code = row.resp_status_code || 0;
  if (!status) return true;
  if (status === "error") return code >= 400 || Boolean(row.error_msg);
  return String(Math.floor(code / 100)) + "xx" === status;
}

/** Rows that pass every filter. llamaswap applies all of them; applying them here too keeps
 *  a server that ignores one (llama-swap: status and path) honest. */
export function applyLocalFilters(rows, filters) {
  const path = (filters.path || "").toLowerCase();
  const from = filters.from ? new Date(filters.from).getTime() : -Infinity;
  const to = filters.to ? new Date(filters.to).getTime() : Infinity;
  return rows.filter((row) => {
    const t = Date.parse(row.timestamp);
    return statusMatches(row, filters.status)
      && (!filters.model || row.model === filters.model)
      && (!path || String(row.req_path || "").toLowerCase().includes(path))
      && (Number.isNaN(t) || (t >= from && t <= to));
  });
}

export const EXPORT_COLUMNS = [
  ["id", (r) => r.id], ["timestamp", (r) => r.timestamp], ["model", (r) => r.model],
  ["req_path", (r) => r.req_path], ["resp_status_code", (r) => r.resp_status_code],
  ["resp_content_type", (r) => r.resp_content_type],
  ["cache_tokens", (r) => r.tokens?.cache_tokens], ["input_tokens", (r) => r.tokens?.input_tokens],
  ["output_tokens", (r) => r.tokens?.output_tokens],
  ["prompt_per_second", (r) => r.tokens?.prompt_per_second],
  ["tokens_per_second", (r) => r.tokens?.tokens_per_second],
  ["duration_ms", (r) => r.duration_ms], ["error_msg", (r) => r.error_msg],
];

function csvCell(value) {
  if (value === undefined || value === null) return "";
  const text = String(value);
  // Quote what needs it; a leading = + - @ is prefixed so spreadsheets do not run it.
  const safe = /^[=+\-@\t\r]/.test(text) && Number.isNaN(Number(text)) ? "'" + text : text;
  return /[",\n\r]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
}

export function toCSV(rows) {
  const lines = [EXPORT_COLUMNS.map(([name]) => name).join(",")];
  for (const row of rows) lines.push(EXPORT_COLUMNS.map(([, get]) => csvCell(get(row))).join(","));
  return lines.join("\r\n") + "\r\n";
}

/** A capture body: llama-swap sends base64, llamaswap may send text; show text either way. */
export function decodeBody(body) {
  if (!body) return "";
  if (/^[A-Za-z0-9+/]+=*$/.test(body) && body.length % 4 === 0) {
    try {
      const binary = atob(body);
      const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch { /* not base64 of UTF-8 text: show it as it came */ }
  }
  return body;
}

/** Pretty JSON when the text is JSON, else the text. */
export function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

/** A row in llama-swap's shape. Rows in llamaswap's older shape (ts, endpoint, status,
 *  flat token fields) are converted, so the page reads either server version. */
export function normalizeRow(r) {
  if ("req_path" in r || !("endpoint" in r)) return r;
  return {
    id: r.id, timestamp: typeof r.ts === "number" ? new Date(r.ts * 1000).toISOString() : r.ts,
    model: r.model, req_path: r.endpoint, resp_status_code: r.status, resp_content_type: "",
    tokens: { cache_tokens: r.cached_tokens, input_tokens: r.input_tokens, output_tokens: r.output_tokens,
              prompt_per_second: r.prompt_per_second, tokens_per_second: r.tokens_per_second },
    duration_ms: r.duration_ms, has_capture: Boolean(r.has_capture),
    error_msg: r.error || undefined, metadata: r.client ? { client: r.client } : undefined,
  };
}

/** Stats in llama-swap's shape; the older per-model shape gives its histograms when one
 *  model is selected. */
export function normalizeStats(s) {
  if ("gen_histogram" in s || !s.models) return s;
  const models = Object.values(s.models);
  const one = models.length === 1 ? models[0] : null;
  return { ...s, prompt_histogram: one ? one.prompt_histogram : null, gen_histogram: one ? one.gen_histogram : null };
}
