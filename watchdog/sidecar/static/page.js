// agents-watchdog live page: polls the sidecar's JSON API and draws what is in flight.
//
// The entry module: it wires the views under js/ together and starts polling. Each
// view draws from the shared model (js/model.js); a selection redraws the views that
// mark it. No build step: the browser loads these ES modules as they are.

import { renderDetail } from "./js/detail.js";
import { duration } from "./js/format.js";
import { bindIncidents, renderIncidents } from "./js/incidents.js";
import { build, elapsed, flatten, model, stats } from "./js/model.js";
import { startPolling } from "./js/poll.js";
import { bindProcesses, renderProcesses } from "./js/processes.js";
import { renderSummary } from "./js/summary.js";
import { askForToken, bindTokenDialog } from "./js/token.js";
import { bindTree, renderTree, tickTree } from "./js/tree.js";

const TICK_MS = 250;

// Measurements read by the tests (and handy in the console).
window.watchdogPage = { stats, model };

function apply(processes, spans, incidents) {
  const started = performance.now();
  model.fetchedAt = started;
  model.processes = processes;
  model.spans = spans;
  if (incidents) {
    model.incidents = incidents.incidents || [];
    model.incidentProblem = incidents.problem || null;
  }
  build();
  flatten();
  renderSummary();
  renderProcesses();
  renderTree();
  if (incidents) renderIncidents();
  renderDetail(false);
  void document.body.offsetHeight; // include layout in the measurement
  const took = performance.now() - started;
  stats.renders += 1;
  stats.renderMs.push(Math.round(took * 10) / 10);
  if (stats.renderMs.length > 120) stats.renderMs.shift();
  if (stats.fetchMs.length > 120) stats.fetchMs.shift();
  stats.spans = spans.length;
  stats.rows = model.rows.length;
  if (stats.firstRenderMs === null) stats.firstRenderMs = Math.round(performance.now());
}

function select(selection) {
  model.selected = selection;
  renderDetail(true);
  renderTree();
  renderProcesses();
  renderIncidents();
}

// Ages and heartbeats tick client-side from the last poll, between polls.
function tick() {
  tickTree();
  const since = elapsed();
  for (const cell of document.querySelectorAll("td.heartbeat, dd.heartbeat")) {
    cell.textContent = duration(Number(cell.dataset.base) + since);
  }
  const age = document.querySelector("#detail .age-live");
  if (age) age.textContent = duration(Number(age.dataset.base) + (age.dataset.ticks === "1" ? since : 0));
}

bindProcesses(select);
bindTree(select);
bindIncidents(select);
bindTokenDialog();
setInterval(tick, TICK_MS);
startPolling(apply, askForToken);
