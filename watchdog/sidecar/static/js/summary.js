// The header's counts: processes, open spans, hung, orphaned, blocked loops.

import { $ } from "./dom.js";
import { model } from "./model.js";

function setCount(id, count, text, alarm, raised) {
  const element = $(id);
  element.dataset.count = String(count);
  element.textContent = text;
  if (alarm) element.classList.toggle(alarm, raised);
}

export function renderSummary() {
  const processes = model.processes;
  const down = processes.filter((p) => p.state !== "live").length;
  let hung = 0;
  let orphaned = 0;
  for (const span of model.spans) {
    if (span.state === "hung") hung += 1;
    else if (span.state === "orphaned") orphaned += 1;
  }
  const blocked = processes.reduce((n, p) => n + p.loops.filter((l) => l.blocked).length, 0);
  const open = model.spans.length - orphaned;
  setCount(
    "count-processes",
    processes.length,
    processes.length + (processes.length === 1 ? " process" : " processes") +
      (down ? " (" + down + " not live)" : ""),
    "alarm",
    down > 0,
  );
  setCount("count-spans", open, open + " open spans", null, false);
  setCount("count-hung", hung, hung + " hung", "alarm", hung > 0);
  setCount("count-orphaned", orphaned, orphaned + " orphaned", "warn", orphaned > 0);
  setCount("count-blocked", blocked, blocked + " blocked loops", "blocked", blocked > 0);
  document.title = (hung ? "(" + hung + " hung) " : "") + "agents-watchdog";
}
