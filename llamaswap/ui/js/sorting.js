// Sortable table headers: a button in each sortable column header, aria-sort on the sorted
// one, the choice kept in the tab's sessionStorage. Sorting itself is the caller's (the
// activity table asks llamaswap; the models table sorts what it has).

import { el } from "./dom.js";

const STORE = "llamaswap.sort.";

/** The sort after a click on `key`: the sorted column flips, another starts ascending. */
export function nextSort(current, key) {
  if (current.key === key) return { key, dir: current.dir === "asc" ? "desc" : "asc" };
  return { key, dir: "asc" };
}

/** The table's saved sort, if it names one of `keys` (stored text is not trusted). */
export function loadSort(table, keys, fallback, storage = sessionStorage) {
  try {
    const saved = JSON.parse(storage.getItem(STORE + table) || "null");
    if (saved && keys.includes(saved.key) && (saved.dir === "asc" || saved.dir === "desc")) {
      return { key: saved.key, dir: saved.dir };
    }
  } catch { /* unreadable: the default */ }
  return { ...fallback };
}

export function saveSort(table, sort, storage = sessionStorage) {
  try {
    storage.setItem(STORE + table, JSON.stringify({ key: sort.key, dir: sort.dir }));
  } catch { /* storage refused (full or disabled): the sort holds until the page is left */ }
}

const missing = (v) => v === undefined || v === null || v === "";

/** Compares two present cell values: numbers as numbers, text by locale (numerals too). */
export function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
}

/** rows sorted by `value(row, key)` (a copy; no key: as they are); ties keep their order,
 *  missing values go last whichever the direction. */
export function sortRows(rows, sort, value) {
  if (!sort.key) return [...rows];
  const sign = sort.dir === "desc" ? -1 : 1;
  return rows.map((row, index) => ({ row, index, v: value(row, sort.key) }))
    .sort((x, y) => {
      if (missing(x.v) !== missing(y.v)) return missing(x.v) ? 1 : -1;
      return (missing(x.v) ? 0 : sign * compareValues(x.v, y.v)) || x.index - y.index;
    })
    .map((entry) => entry.row);
}

/**
 * A header row: columns = [{label, key?}] (no key: not sortable). `sort` ({key, dir}) is the
 * caller's state, updated in place on a click before onSort(sort) is called; the header
 * changes in place too, so keyboard focus stays on the button.
 */
export function sortableHeader(columns, sort, onSort) {
  const cells = columns.map((column) => {
    if (!column.key) return { column, th: el("th", { scope: "col" }, column.label) };
    const arrow = el("span", { class: "sort-arrow", "aria-hidden": "true" });
    const button = el("button", { type: "button", class: "sort", "data-sort": column.key }, column.label, arrow);
    const th = el("th", { scope: "col", class: "sortable" }, button);
    button.addEventListener("click", () => {
      Object.assign(sort, nextSort(sort, column.key));
      update();
      onSort(sort);
    });
    return { column, th, arrow };
  });
  function update() {
    for (const { column, th, arrow } of cells) {
      if (!column.key) continue;
      const sorted = column.key === sort.key;
      if (sorted) th.setAttribute("aria-sort", sort.dir === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      arrow.textContent = sorted ? (sort.dir === "asc" ? " ▲" : " ▼") : "";
    }
  }
  update();
  return el("tr", {}, cells.map((c) => c.th));
}
