// The detail panel: a span (facts, stack, incident timeline, abort), a process (its
// event loops and their stacks) or an incident that has ended.

import { abortSection } from "./abort.js";
import { api, NeedsToken } from "./api.js";
import { $, badge, el } from "./dom.js";
import { clientTimeouts, clock, duration, label } from "./format.js";
import { elapsed, model } from "./model.js";
import { timeoutWarning } from "./processes.js";
import { askForToken } from "./token.js";

const detail = {
  key: null, // what the panel was built for
  signature: null, // of what it shows, to redraw only on change
  parts: null,
  span: null, // last known span (kept after it ends)
  incidentId: null,
  timelineText: "",
  lookups: 0,
};

// Draw the selection; `fresh` when it was just selected (rebuild, ask for its incident).
export function renderDetail(fresh) {
  const selected = model.selected;
  if (!selected) return;
  if (selected.type === "span") spanDetail(fresh);
  else if (selected.type === "process") processDetail();
  else incidentDetail(fresh);
}

function field(list, name, value, mono) {
  if (value === null || value === undefined || value === "") return;
  const dd = el("dd", mono ? "mono" : "", value);
  dd.dataset.field = name.toLowerCase();
  list.append(el("dt", "", name), dd);
}

function spanDetail(fresh) {
  const key = model.selected.key;
  const node = model.nodes.get(key);
  if (fresh || detail.key !== key) {
    detail.key = key;
    detail.span = node ? node.span : null;
    detail.incidentId = null;
    detail.timelineText = "";
    detail.lookups = 0;
    buildSpanDetail();
  }
  if (node) detail.span = node.span;
  const span = detail.span;
  const parts = detail.parts;
  if (!span) {
    $("detail").replaceChildren(el("p", "empty", "This span is no longer open."));
    return;
  }
  parts.kind.textContent = span.kind;
  parts.kind.className = "kind k-" + span.kind;
  parts.title.textContent = label(span);
  parts.state.replaceChildren(badge(node ? span.state : "ended", node ? span.state : "resolved"));
  if (node && node.blocked) parts.state.append(" ", badge("loop blocked", "blocked"));
  parts.gone.hidden = Boolean(node);
  for (const button of parts.buttons) button.disabled = !node || span.state === "orphaned";
  fillSpanFields(parts, span);
  parts.cause.hidden = !span.cause;
  parts.cause.textContent = span.cause ? "Probable cause: " + span.cause : "";
  let stackText = span.stack || "";
  if (!stackText && span.stack_source === "none") {
    stackText = "No stack could be captured: the incident timeline says why.";
  } else if (!stackText && span.state === "hung") {
    stackText = "Being captured…";
  }
  parts.stackHead.textContent = span.stack
    ? "Stack (" + (span.stack_source || "captured") + ")"
    : "Stack";
  parts.stackHead.hidden = !stackText;
  parts.stack.hidden = !stackText;
  if (parts.stack.textContent !== stackText) drawStack(parts.stack, stackText);
  // The incident is asked for on every other poll: its timeline changes slowly.
  detail.lookups += 1;
  if (detail.lookups % 2 === 0) return;
  if (node) lookupIncident(span);
  else if (detail.incidentId !== null) loadTimeline(detail.incidentId, key);
}

// An in-process stack lists the span's task outermost first, then the thread (which
// for an async hang only shows the idle event loop). The task's innermost frame is
// where it is stuck: it is marked and scrolled into view.
function drawStack(pre, text) {
  const threadAt = text.startsWith("Task ") ? text.search(/\nThread /) : -1;
  const task = threadAt >= 0 ? text.slice(0, threadAt) : "";
  let last = -1;
  for (const match of task.matchAll(/\n[ \t]*File "/g)) last = match.index;
  if (last < 0) {
    pre.textContent = text;
    pre.scrollTop = 0;
    return;
  }
  const mark = el("mark", "stuck-here", task.slice(last + 1));
  mark.title = "where the span's task waits";
  pre.replaceChildren(task.slice(0, last + 1), mark, text.slice(threadAt));
  pre.scrollTop = Math.max(0, mark.offsetTop + mark.offsetHeight - pre.clientHeight + 24);
}

// Short facts in two pairs of columns, ids one to a line. Rebuilt only when something
// changed, so that an id being selected for copying stays selected.
function fillSpanFields(parts, span) {
  const rule = span.action && span.action !== "alert" ? " · rule: " + span.action : "";
  const facts = [
    ["Agent", span.agent],
    ["Service", span.service],
    ["Process", span.host + " · pid " + span.pid],
    ["Started", clock(span.started_at)],
    ["Age", null],
    ["Threshold", duration(span.threshold_seconds) + rule],
    ["Reason", span.reason],
    ["Flagged", span.flagged_at ? clock(span.flagged_at) : null],
    ["Thread", span.thread_id],
    ["Task", span.task_id],
  ];
  const ids = [
    ["Span", span.span_id],
    ["Trace", span.trace_id],
    ["Parent", span.parent_id],
    ["Instance", span.instance_id],
  ];
  const signature = JSON.stringify([facts, ids, span.state]);
  if (parts.fields.dataset.signature !== signature) {
    parts.fields.dataset.signature = signature;
    const rows = document.createDocumentFragment();
    for (const [name, value] of facts) {
      if (name === "Age") {
        const age = el("dd", "age-live", duration(span.age_seconds));
        age.dataset.field = "age";
        rows.append(el("dt", "", name), age);
      } else {
        field(rows, name, value, false);
      }
    }
    parts.fields.replaceChildren(rows);
    const lines = document.createDocumentFragment();
    for (const [name, value] of ids) field(lines, name, value, true);
    parts.ids.replaceChildren(lines);
  }
  const age = parts.fields.querySelector(".age-live");
  age.dataset.base = String(span.age_seconds);
  age.dataset.ticks = span.state === "orphaned" ? "0" : "1";
  age.textContent = duration(span.age_seconds + (span.state === "orphaned" ? 0 : elapsed()));
}

function buildSpanDetail() {
  const root = $("detail");
  const head = el("div", "detail-head");
  const kind = el("span", "kind");
  const title = el("span", "title");
  const state = el("span", "state");
  head.append(kind, title, state);
  const gone = el("p", "gone", "This span is no longer open: it ended or was aborted.");
  gone.hidden = true;
  const fields = el("dl", "fields pairs");
  const ids = el("dl", "fields");
  const cause = el("p", "cause");
  cause.id = "span-cause";
  cause.hidden = true;
  const stackHead = el("h3", "", "Stack");
  const stack = el("pre", "stack");
  stack.id = "detail-stack";
  const timelineHead = el("h3", "", "Incident");
  const timeline = el("ol", "timeline");
  timeline.id = "detail-timeline";
  const timelineNote = el("p", "muted", "No incident for this span (yet).");

  const { section: abort, buttons } = abortSection(() => detail.span);

  root.replaceChildren(head, gone, fields, ids, cause, stackHead, stack, timelineHead, timelineNote, timeline, abort);
  detail.parts = { kind, title, state, gone, fields, ids, cause, stackHead, stack, timeline, timelineNote, timelineHead, buttons };
}

async function lookupIncident(span) {
  const key = detail.key;
  let id = null;
  try {
    const found = await api(
      "/v1/spans/" + encodeURIComponent(span.span_id) + "?instance_id=" + encodeURIComponent(span.instance_id),
    );
    id = found.incident_id;
  } catch (_) {
    id = null; // it just ended; the incident list below may still know it
  }
  if (id === null || id === undefined) {
    const match = model.incidents.find((i) => i.span_id === span.span_id && i.instance_id === span.instance_id);
    id = match ? match.id : null;
  }
  if (detail.key !== key) return;
  if (id !== null) detail.incidentId = id;
  if (detail.incidentId !== null) loadTimeline(detail.incidentId, key);
}

async function loadTimeline(id, key) {
  let incident;
  try {
    incident = await api("/v1/incidents/" + id);
  } catch (error) {
    if (error instanceof NeedsToken) askForToken(error.message);
    return;
  }
  if (detail.key !== key || !detail.parts) return;
  const text = JSON.stringify(incident.timeline) + incident.state;
  if (text === detail.timelineText) return;
  detail.timelineText = text;
  drawTimeline(detail.parts, incident);
}

function drawTimeline(parts, incident) {
  parts.timelineHead.textContent = "Incident #" + incident.id + " · " + incident.alertname + " · " + incident.state;
  parts.timelineNote.hidden = true;
  parts.timeline.replaceChildren(
    ...incident.timeline.map((entry) => {
      const li = el("li");
      li.dataset.event = entry.event;
      const detailText = Object.entries(entry.detail || {})
        .filter(([name, value]) => value !== null && value !== "" && name !== "stack")
        .map(([name, value]) => name + "=" + (typeof value === "object" ? JSON.stringify(value) : value))
        .join(", ");
      li.append(el("span", "muted", clock(entry.at)), el("span", "event", entry.event), el("span", "what", detailText));
      return li;
    }),
  );
}

function processDetail() {
  const key = model.selected.key;
  const instance = key.slice("process:".length);
  const process = model.processes.find((p) => p.instance_id === instance);
  const root = $("detail");
  if (!process) {
    detail.key = key;
    detail.signature = null;
    root.replaceChildren(el("p", "empty", "This process is no longer known to the sidecar."));
    return;
  }
  // Redrawn only when something other than the heartbeat age (which ticks) changed.
  const signature = JSON.stringify(Object.assign({}, process, { heartbeat_age_seconds: 0 }));
  const beat = root.querySelector("dd.heartbeat");
  if (detail.key === key && detail.signature === signature && beat) {
    beat.dataset.base = String(process.heartbeat_age_seconds);
    return;
  }
  detail.key = key;
  detail.parts = null;
  detail.signature = signature;
  const head = el("div", "detail-head");
  const kind = el("span", "kind", "process");
  head.append(kind, el("span", "title", process.service), badge(process.state));
  const fields = el("dl", "fields");
  field(fields, "Host", process.host);
  field(fields, "PID", process.pid);
  field(fields, "Heartbeat", duration(process.heartbeat_age_seconds));
  const beatField = fields.lastElementChild;
  beatField.classList.add("heartbeat");
  beatField.dataset.base = String(process.heartbeat_age_seconds);
  field(fields, "Every", duration(process.heartbeat_interval_seconds));
  field(fields, "Identity", (process.verified ? "verified: " : "not verified: ") + process.verify_note);
  field(fields, "Open spans", process.open_spans + " (" + process.hung_spans + " hung)");
  field(fields, "Orphaned", process.orphaned_spans || null);
  field(fields, "Died", process.died_at ? clock(process.died_at) : null);
  field(fields, "Dropped events", process.dropped_events || null);
  field(fields, "Versions", "SDK " + (process.sdk_version || "?") + " · watchdog " + (process.watchdog_version || "?"));
  field(fields, "Client timeouts", clientTimeouts(process.client_timeouts));
  field(fields, "Instance", process.instance_id, true);
  const parts = [head, fields];
  if (process.timeout_warning) parts.push(timeoutWarning(process.timeout_warning));
  parts.push(el("h3", "", "Event loops"));
  if (!process.loops.length) parts.push(el("p", "muted", "No event loop reported (none ran spans yet)."));
  for (const loop of process.loops) {
    const line = el("p", "", "thread " + loop.thread_id + " · lag " + (loop.lag_seconds * 1000).toFixed(0) + " ms ");
    if (loop.blocked) line.append(badge("blocked", "blocked"));
    parts.push(line);
    if (loop.stack) parts.push(el("pre", "stack", loop.stack));
  }
  root.replaceChildren(...parts);
}

function incidentDetail(fresh) {
  const selected = model.selected;
  const incident = selected.incident;
  if (fresh || detail.key !== selected.key) {
    detail.key = selected.key;
    detail.timelineText = "";
    const head = el("div", "detail-head");
    head.append(el("span", "kind k-" + incident.kind, incident.kind), el("span", "title", label(incident)), badge(incident.state));
    const fields = el("dl", "fields");
    field(fields, "Alert", incident.alertname);
    field(fields, "Agent", incident.agent);
    field(fields, "Service", incident.service);
    field(fields, "Process", incident.host + " · pid " + incident.pid);
    field(fields, "Detected", clock(incident.detected_at));
    field(fields, "Ended", incident.ended_at ? clock(incident.ended_at) : null);
    field(fields, "Duration", incident.duration === null ? null : duration(incident.duration));
    field(fields, "Resolution", incident.resolution);
    field(fields, "Span", incident.span_id, true);
    const timelineHead = el("h3", "", "Incident #" + incident.id);
    const timeline = el("ol", "timeline");
    timeline.id = "detail-timeline";
    $("detail").replaceChildren(head, fields, timelineHead, timeline);
    detail.parts = { timeline, timelineHead, timelineNote: el("p") };
    detail.lookups = 0;
  }
  detail.lookups += 1;
  if (detail.lookups % 2 === 1) loadTimeline(incident.id, selected.key);
}
