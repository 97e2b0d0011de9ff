// Small DOM helpers. Text always goes in as text nodes, never as HTML, so
// names and error messages from the mesh cannot inject markup.

// h builds an element: h("a", {href: "#/x", class: "y"}, "text", child...).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// table builds a table from a header row and rows of cells; a row may be
// {cells, class}.
export function table(headers, rows, attrs) {
  return h("table", attrs,
    h("thead", null, h("tr", null, headers.map((x) => h("th", null, x)))),
    h("tbody", null, rows.map((r) => {
      const cells = Array.isArray(r) ? r : r.cells;
      return h("tr", Array.isArray(r) ? null : { class: r.class, dataset: r.dataset }, cells.map((c) => h("td", null, c)));
    })));
}

// getJSON fetches an API path and returns its JSON, or throws the API's
// error message.
export async function getJSON(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `${path}: ${resp.status}`);
  return body;
}

export function fmtRate(x) {
  if (x === null || x === undefined) return "–";
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

export function fmtPct(x) {
  return (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + "%";
}

export function fmtMs(x) {
  if (x === null || x === undefined) return "–";
  return x >= 100 ? `${x.toFixed(0)} ms` : `${x.toFixed(1)} ms`;
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(0)}s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

export function workloadLink(ns, name) {
  return h("a", { href: `#/workload/${encodeURIComponent(ns)}/${encodeURIComponent(name)}` }, name);
}

export function serviceLink(ns, host, label) {
  return h("a", { href: `#/service/${encodeURIComponent(ns)}/${encodeURIComponent(host)}` }, label || host);
}

export function warnings(list) {
  if (!list || list.length === 0) return h("p", { class: "muted" }, "No warnings.");
  return h("ul", { class: "warnings" }, list.map((w) => h("li", null, w)));
}
