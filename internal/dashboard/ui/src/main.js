// Loom's dashboard: a hash router over the pages. The graph and the lists
// refresh themselves; see ../../doc.go for the JSON API they read.
import "./style.css";
import { h } from "./dom.js";
import { GraphView } from "./graph.js";
import { servicesPage, servicePage, workloadsPage, workloadPage, proxiesPage, configPage } from "./pages.js";

const PAGE_REFRESH_MS = 5000;

const routes = [
  [/^#\/graph$/, "graph", null],
  [/^#\/services$/, "services", () => servicesPage],
  [/^#\/service\/([^/]+)\/([^/]+)$/, "services", () => servicePage],
  [/^#\/workloads$/, "workloads", () => workloadsPage],
  [/^#\/workload\/([^/]+)\/([^/]+)$/, "workloads", () => workloadPage],
  [/^#\/proxies$/, "proxies", () => proxiesPage],
  [/^#\/config(?:\/(.+))?$/, "config", () => configPage],
];

let graph = null;
let timer = null;

async function show() {
  const main = document.getElementById("main");
  const status = document.getElementById("status");
  clearInterval(timer);
  const hash = location.hash || "#/graph";
  for (const [re, nav, page] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === nav);
    if (nav === "graph") {
      if (!graph) graph = new GraphView(main, status);
      return;
    }
    if (graph) {
      graph.destroy();
      graph = null;
    }
    const args = m.slice(1).map((x) => (x === undefined ? undefined : decodeURIComponent(x)));
    const render = async () => {
      try {
        await page()(main, ...args);
        status.textContent = `updated ${new Date().toLocaleTimeString()}`;
        status.className = "status";
      } catch (err) {
        main.replaceChildren(h("p", { class: "bad" }, err.message));
      }
    };
    await render();
    // Config pages do not move by themselves; the others do.
    if (nav !== "config") timer = setInterval(render, PAGE_REFRESH_MS);
    return;
  }
  location.hash = "#/graph";
}

window.addEventListener("hashchange", show);
show();
