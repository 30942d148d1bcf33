// Polling the sidecar: processes and spans every time, incidents every other time.

import { api, NeedsToken } from "./api.js";
import { $ } from "./dom.js";
import { model, stats } from "./model.js";

// Polls follow each other after at least POLL_MS, and after POLL_LOAD times what the
// last one took: with thousands of spans a poll costs the sidecar tens of milliseconds,
// and it must not spend its time serving this page.
const POLL_MS = 500;
const POLL_LOAD = 8;
const MAX_POLL_MS = 5000;
const HIDDEN_POLL_MS = 5000; // a background tab asks less often
const INCIDENT_EVERY = 2; // polls between refreshes of the incident list

let onData = () => {};
let onNeedsToken = () => {};

// Start polling: `data(processes, spans, incidents)` after each poll (incidents null
// when not asked for), `needsToken(message)` when the sidecar refuses the token.
export function startPolling(data, needsToken) {
  onData = data;
  onNeedsToken = needsToken;
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !model.paused) schedule(0);
  });
  poll();
}

export function schedule(delay) {
  clearTimeout(model.timer);
  model.timer = setTimeout(poll, delay);
}

async function poll() {
  if (model.paused) return;
  const started = performance.now();
  const withIncidents = model.polls % INCIDENT_EVERY === 0;
  try {
    const [processes, spans, incidents] = await Promise.all([
      api("/v1/processes"),
      api("/v1/spans"),
      withIncidents ? api("/v1/incidents?limit=30").catch(incidentsFailed) : null,
    ]);
    stats.fetchMs.push(Math.round(performance.now() - started));
    onData(processes.processes, spans.spans, incidents);
    setConnection(true, "live · " + new Date().toLocaleTimeString());
    model.polls += 1;
  } catch (error) {
    if (error instanceof NeedsToken) {
      onNeedsToken(error.message);
      return;
    }
    setConnection(false, "sidecar unreachable: " + error.message);
  }
  const took = performance.now() - started;
  schedule(document.hidden ? HIDDEN_POLL_MS : Math.min(MAX_POLL_MS, Math.max(POLL_MS, took * POLL_LOAD)));
}

function incidentsFailed(error) {
  // Incident history can be off or unavailable: the live view goes on without it.
  if (error instanceof NeedsToken) throw error;
  return { incidents: null, problem: error.message };
}

export function setConnection(ok, text) {
  const element = $("conn");
  element.textContent = text;
  element.className = "conn " + (ok ? "ok" : "error");
}
