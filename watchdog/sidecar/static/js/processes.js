// The processes table: one row per app process, with what is wrong with it.

import { $, badge, el } from "./dom.js";
import { duration } from "./format.js";
import { model } from "./model.js";

export function renderProcesses() {
  const body = $("processes").tBodies[0];
  const rows = [];
  for (const process of model.processes) {
    const blocked = process.loops.some((loop) => loop.blocked);
    const tr = document.createElement("tr");
    tr.dataset.key = "process:" + process.instance_id;
    tr.className = "state-" + process.state + (blocked ? " blocked" : "");
    if (model.selected && model.selected.key === tr.dataset.key) tr.classList.add("selected");
    const state = el("td");
    state.append(badge(process.state));
    if (blocked) state.append(" ", badge("loop blocked", "blocked"));
    if (process.blind_reason) {
      // Why its runs go unseen, and the fix: the one thing to read about a blind process.
      state.title = process.blind_reason;
      state.append(el("div", "blind-reason", process.blind_reason));
    }
    if (process.timeout_warning) {
      // The likeliest cause of a hang to come, and its fix: shown before anything hangs.
      state.append(timeoutWarning(process.timeout_warning));
    }
    const heartbeat = el("td", "num heartbeat", duration(process.heartbeat_age_seconds));
    heartbeat.dataset.base = String(process.heartbeat_age_seconds);
    const lag = process.loop_lag_seconds;
    tr.append(
      el("td", "", process.service),
      el("td", "", process.host),
      el("td", "num", process.pid),
      state,
      heartbeat,
      el("td", "num", lag === null ? "–" : (lag * 1000).toFixed(0) + " ms"),
      el("td", "num", process.open_spans),
      el("td", "num", process.hung_spans),
      el("td", "num", process.orphaned_spans),
    );
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  $("no-processes").hidden = rows.length > 0;
}

export function timeoutWarning(text) {
  const warning = el("div", "timeout-warning", "⚠ " + text);
  warning.title = text;
  // A long sentence in a table of short cells: wrapped, small, in the warning colour.
  Object.assign(warning.style, { whiteSpace: "normal", maxWidth: "48ch", fontSize: "0.85em", color: "var(--late)" });
  return warning;
}

// A click on a process row selects it.
export function bindProcesses(select) {
  $("processes").tBodies[0].addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr) select({ type: "process", key: tr.dataset.key });
  });
}
