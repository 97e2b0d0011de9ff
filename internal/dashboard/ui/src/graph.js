// The live service graph: cytoscape with the dagre layout. Workloads are
// nodes inside a compound node per app; edges carry request rate, error
// share, p95 latency and a lock for mutual TLS, and turn red when requests
// fail. The graph refreshes itself every few seconds.
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import { h, getJSON, fmtRate, fmtPct, fmtMs, table, workloadLink, serviceLink } from "./dom.js";

cytoscape.use(dagre);

export const REFRESH_MS = 5000;
const RED = "#d32f2f";
const GREEN = "#2e7d32";
const GREY = "#9e9e9e";

const style = [
  { selector: "node", style: {
    label: "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
    "background-color": "#1976d2", width: 28, height: 28, "border-width": 2, "border-color": "#0d47a1",
    color: "#212121", "text-wrap": "wrap", "text-max-width": 120 } },
  { selector: "node[kind = 'service']", style: { shape: "triangle", "background-color": "#7b1fa2", "border-color": "#4a148c" } },
  { selector: "node[kind = 'unknown']", style: { "background-color": GREY, "border-color": "#616161" } },
  { selector: "node[?idle]", style: { "background-opacity": 0.25, "border-style": "dashed", "border-color": GREY } },
  { selector: "node.app", style: {
    shape: "round-rectangle", "background-color": "#e3f2fd", "background-opacity": 0.6, "border-color": "#90caf9",
    "border-width": 1, "text-valign": "top", "text-halign": "center", "font-weight": "bold", padding: 12 } },
  { selector: "edge", style: {
    width: "data(width)", "line-color": GREEN, "target-arrow-color": GREEN, "target-arrow-shape": "triangle",
    "curve-style": "bezier", label: "data(label)", "font-size": 10, "text-background-color": "#fff",
    "text-background-opacity": 0.85, "text-background-padding": 2, "text-rotation": "autorotate" } },
  { selector: "edge[state = 'error']", style: { "line-color": RED, "target-arrow-color": RED, color: RED } },
];

// edgeLabel is "12.3 rps · 5.0% · 45 ms 🔒".
function edgeLabel(e) {
  const parts = [`${fmtRate(e.rps)} rps`];
  if (e.error_rate > 0) parts.push(fmtPct(e.error_rate));
  if (e.p95_ms !== null) parts.push(fmtMs(e.p95_ms));
  let label = parts.join(" · ");
  if (e.mtls !== null && e.mtls >= 0.999) label += " 🔒";
  return label;
}

function nodeLabel(n) {
  if (n.kind === "workload") return n.version ? `${n.version}\n${n.name}` : n.name;
  if (n.kind === "service") return `${n.name} (service)`;
  return "unknown";
}

// elements turns /api/graph into cytoscape elements.
function elements(g) {
  const els = [];
  const groups = new Map();
  for (const n of g.nodes) {
    if (n.group && !groups.has(n.group)) {
      groups.set(n.group, { data: { id: n.group, label: n.app }, classes: "app" });
    }
    els.push({ data: { id: n.id, parent: n.group || undefined, label: nodeLabel(n), kind: n.kind, idle: n.idle,
      name: n.name, namespace: n.namespace, app: n.app, version: n.version } });
  }
  for (const e of g.edges) {
    els.push({ data: { id: e.id, source: e.source, target: e.target, label: edgeLabel(e), state: e.state,
      width: Math.min(1.5 + Math.log10(1 + e.rps) * 2, 8), rps: e.rps, error_rate: e.error_rate,
      p95_ms: e.p95_ms, mtls: e.mtls, service: e.service } });
  }
  return [...groups.values(), ...els];
}

// GraphView owns the page's cytoscape instance and its refresh timer.
export class GraphView {
  constructor(root, status) {
    this.root = root;
    this.status = status;
    this.window = "1m";
    this.container = h("div", { id: "cy", class: "graph" });
    this.legend = h("div", { class: "legend" },
      h("span", { class: "swatch ok" }), "requests ", h("span", { class: "swatch error" }), "failing requests ",
      "· 🔒 mutual TLS · dashed: idle");
    this.edgeList = h("div", { id: "edge-list" });
    const windowSelect = h("select", { id: "window", "aria-label": "time window", onchange: (ev) => {
      this.window = ev.target.value;
      this.refresh();
    } }, ["1m", "5m", "10m", "30m"].map((w) => h("option", { value: w }, `last ${w}`)));
    root.replaceChildren(h("div", { class: "toolbar" }, windowSelect, this.legend), this.container, this.edgeList);
    this.cy = cytoscape({ container: this.container, style, elements: [], wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 3 });
    this.cy.on("tap", "node", (ev) => {
      const d = ev.target.data();
      if (d.kind === "workload") location.hash = `#/workload/${encodeURIComponent(d.namespace)}/${encodeURIComponent(d.name)}`;
    });
    this.cy.on("tap", "edge", (ev) => {
      const svc = ev.target.data("service");
      const ns = svc.split(".")[1] || "default";
      location.hash = `#/service/${encodeURIComponent(ns)}/${encodeURIComponent(svc)}`;
    });
    this.nodeIDs = "";
    this.refreshes = 0;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    // Tests and the curious read the graph's state here.
    window.loomGraph = this;
  }

  destroy() {
    clearInterval(this.timer);
    this.cy.destroy();
    if (window.loomGraph === this) window.loomGraph = undefined;
  }

  async refresh() {
    let g;
    try {
      g = await getJSON(`api/graph?window=${this.window}`);
    } catch (err) {
      this.status.textContent = `graph: ${err.message}`;
      this.status.className = "status bad";
      return;
    }
    this.update(g);
    this.refreshes++;
    const t = new Date(g.timestamp).toLocaleTimeString();
    this.status.textContent = `${g.source === "prometheus" ? "Prometheus" : "scraped"} · updated ${t}` +
      (g.warnings.length ? ` · ${g.warnings.length} warning(s)` : "");
    this.status.className = g.warnings.length ? "status warn" : "status";
    this.status.title = g.warnings.join("\n");
  }

  update(g) {
    this.last = g;
    const els = elements(g);
    const ids = els.map((e) => e.data.id).sort().join("|");
    const cy = this.cy;
    cy.batch(() => {
      const keep = new Set(els.map((e) => e.data.id));
      cy.elements().forEach((el) => { if (!keep.has(el.id())) el.remove(); });
      for (const e of els) {
        const cur = cy.getElementById(e.data.id);
        if (cur.nonempty()) cur.data(e.data);
        else cy.add(e);
      }
    });
    if (ids !== this.nodeIDs) {
      this.nodeIDs = ids;
      cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 90, fit: true, padding: 20, animate: false }).run();
    }
    this.renderEdgeList(g);
  }

  renderEdgeList(g) {
    const nodes = new Map(g.nodes.map((n) => [n.id, n]));
    const link = (id) => {
      const n = nodes.get(id);
      if (!n || n.kind === "unknown") return "unknown";
      if (n.kind === "service") return serviceLink(n.namespace, `${n.name}.${n.namespace}.svc.cluster.local`, `${n.name} (service)`);
      return workloadLink(n.namespace, n.name);
    };
    const rows = g.edges.map((e) => ({
      class: e.state === "error" ? "edge error" : "edge ok",
      dataset: { edge: e.id, state: e.state },
      cells: [link(e.source), link(e.target), e.service, fmtRate(e.rps), fmtPct(e.error_rate), fmtMs(e.p95_ms),
        e.mtls === null ? "–" : e.mtls >= 0.999 ? "🔒 yes" : fmtPct(e.mtls)],
    }));
    this.edgeList.replaceChildren(
      h("h2", null, "Edges"),
      rows.length ? table(["From", "To", "Service", "Requests/s", "Errors", "p95", "mTLS"], rows, { id: "edge-table" })
        : h("p", { class: "muted" }, "No traffic in this window."));
  }

  // state reports what the page shows: each edge's rate, error share and
  // the color cytoscape draws it in.
  state() {
    return {
      refreshes: this.refreshes,
      nodes: this.cy.nodes().filter((n) => !n.hasClass("app")).map((n) => n.id()),
      edges: this.cy.edges().map((e) => ({ id: e.id(), source: e.source().id(), target: e.target().id(),
        rps: e.data("rps"), error_rate: e.data("error_rate"), state: e.data("state"), mtls: e.data("mtls"),
        color: e.style("line-color"), label: e.data("label") })),
    };
  }
}
