// The list and detail pages: services, workloads, proxies, config.
import { h, table, getJSON, fmtAge, workloadLink, serviceLink, warnings } from "./dom.js";
import { trafficChart } from "./charts.js";

function configTable(refs) {
  if (!refs || refs.length === 0) return h("p", { class: "muted" }, "Nothing applies.");
  return table(["Kind", "Resource", "Applies by", "Source"],
    refs.map((r) => [r.kind, h("a", { href: `#/config/${encodeURIComponent(r.kind)}/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}` },
      `${r.namespace}/${r.name}`), r.why, r.source || "–"]));
}

function traffic(t) {
  return h("section", null, h("h2", null, "Traffic"),
    t.error ? h("p", { class: "bad" }, t.error) : null,
    h("div", { class: "charts" }, trafficChart("Inbound", t.inbound, t.span_seconds), trafficChart("Outbound", t.outbound, t.span_seconds)));
}

function stateCell(s) {
  return h("span", { class: `state ${s.state.replace(" ", "-").toLowerCase()}`, title: s.nack_error || `sent ${s.sent || "–"}, acked ${s.acked || "–"}` }, s.state);
}

function proxyRow(p) {
  const byType = new Map(p.types.map((t) => [t.type, t]));
  const scrape = p.scrape ? (p.scrape.error ? h("span", { class: "bad", title: p.scrape.error }, "failing") : `${p.scrape.series} series`) : "–";
  return {
    class: p.synced ? "proxy synced" : "proxy unsynced",
    dataset: { proxy: p.name },
    cells: [p.workload && p.namespace ? workloadLink(p.namespace, p.workload) : p.name, p.type, p.ip,
      ...["CDS", "LDS", "EDS", "RDS"].map((t) => (byType.has(t) ? stateCell(byType.get(t)) : "–")),
      fmtAge(p.config_age_seconds), p.version || "–", scrape],
  };
}

export async function servicesPage(root) {
  const svcs = await getJSON("api/services");
  root.replaceChildren(h("h1", null, "Services"),
    table(["Service", "Namespace", "Ports", "Workloads", "Warnings"], svcs.map((s) => [
      serviceLink(s.namespace, s.host, s.name), s.namespace, s.ports.map((p) => `${p.number}/${p.protocol}`).join(", "),
      s.workloads.length ? s.workloads.map((w, i) => [i ? ", " : "", workloadLink(s.namespace, w)]) : "none",
      s.warnings.length ? h("span", { class: "warn" }, String(s.warnings.length)) : "0",
    ]), { id: "services" }));
}

export async function servicePage(root, ns, host) {
  const s = await getJSON(`api/services/${encodeURIComponent(ns)}/${encodeURIComponent(host)}`);
  root.replaceChildren(
    h("h1", null, `Service ${s.name}`, h("span", { class: "sub" }, ` ${s.host}`)),
    h("p", null, "Ports: ", s.ports.map((p) => `${p.number} ${p.name} (${p.protocol})`).join(", ") || "none",
      " · Workloads: ", s.workloads.length ? s.workloads.map((w, i) => [i ? ", " : "", workloadLink(ns, w)]) : "none"),
    traffic(s.traffic),
    h("section", null, h("h2", null, "Config that applies"), configTable(s.config)),
    h("section", null, h("h2", null, "Warnings"), warnings(s.warnings)));
}

export async function workloadsPage(root) {
  const ws = await getJSON("api/workloads");
  root.replaceChildren(h("h1", null, "Workloads"),
    table(["Workload", "Namespace", "App", "Version", "Address", "Services", "Proxy", "Warnings"], ws.map((w) => [
      workloadLink(w.namespace, w.name), w.namespace, w.app || "–", w.version || "–", w.address || "–",
      w.services.map((s, i) => [i ? ", " : "", serviceLink(w.namespace, s, s.split(".")[0])]),
      w.proxy ? (w.proxy.synced ? "synced" : h("span", { class: "bad" }, "not synced")) : h("span", { class: "muted" }, "not connected"),
      w.warnings.length ? h("span", { class: "warn" }, String(w.warnings.length)) : "0",
    ]), { id: "workloads" }));
}

export async function workloadPage(root, ns, name) {
  const w = await getJSON(`api/workloads/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`);
  const labels = Object.entries(w.labels || {}).map(([k, v]) => h("code", { class: "label" }, `${k}=${v}`));
  root.replaceChildren(
    h("h1", null, `Workload ${w.name}`, h("span", { class: "sub" }, ` ${w.namespace}`)),
    h("p", null, "Address: ", w.address || "–", " · Labels: ", labels.length ? labels : "none",
      " · Services: ", w.services.length ? w.services.map((s, i) => [i ? ", " : "", serviceLink(ns, s)]) : "none"),
    h("section", null, h("h2", null, "Proxy"), w.proxy
      ? table(["Proxy", "Type", "IP", "CDS", "LDS", "EDS", "RDS", "Config age", "Version", "Scrape"], [proxyRow(w.proxy)])
      : h("p", { class: "muted" }, "No proxy of this workload is connected.")),
    traffic(w.traffic),
    h("section", null, h("h2", null, "Config that applies"), configTable(w.config)),
    h("section", null, h("h2", null, "Warnings"), warnings(w.warnings)));
}

export async function proxiesPage(root) {
  const ps = await getJSON("api/proxies");
  root.replaceChildren(h("h1", null, "Proxies"),
    ps.length
      ? table(["Proxy", "Type", "IP", "CDS", "LDS", "EDS", "RDS", "Config age", "Version", "Scrape"], ps.map(proxyRow), { id: "proxies" })
      : h("p", { class: "muted" }, "No proxy is connected."));
}

export async function configPage(root, focus) {
  const c = await getJSON("api/config");
  const filter = h("input", { type: "search", placeholder: "filter", "aria-label": "filter resources" });
  const rows = c.resources.map((r) => {
    const key = [r.kind, r.namespace, r.name].join("/");
    return {
      class: `resource ${r.status}${focus === key ? " focus" : ""}`,
      dataset: { key, status: r.status },
      cells: [r.kind || "–", r.name ? `${r.namespace}/${r.name}` : "–", r.api_version || "–", r.source || "–",
        h("span", { class: `badge ${r.status}` }, r.status + (r.status === "invalid" && r.serving ? " (last good version serving)" : "")),
        r.errors ? h("ul", { class: "errors" }, r.errors.map((e) => h("li", null, e))) : ""],
    };
  });
  const t = table(["Kind", "Resource", "API version", "Source", "Status", "Errors"], rows, { id: "config" });
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    for (const tr of t.tBodies[0].rows) tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
  });
  const invalid = c.resources.filter((r) => r.status === "invalid").length;
  root.replaceChildren(h("h1", null, "Config"),
    h("p", null, `Version ${c.version} · ${c.resources.length} resources · `,
      invalid ? h("span", { class: "bad" }, `${invalid} invalid`) : "all valid", " ", filter), t);
  const f = t.querySelector("tr.focus");
  if (f) f.scrollIntoView({ block: "center" });
}
