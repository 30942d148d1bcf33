// The recent incidents list.

import { $, badge, el } from "./dom.js";
import { ago, duration, label } from "./format.js";
import { model } from "./model.js";

export function renderIncidents() {
  const items = model.incidents.map((incident) => {
    const li = el("li");
    li.dataset.id = String(incident.id);
    if (model.selected && model.selected.key === "incident:" + incident.id) li.classList.add("selected");
    const what = el("span", "what");
    what.append(
      el("b", "", "#" + incident.id + " "),
      incident.alertname + " · " + label(incident),
      el("span", "muted", " · " + incident.service + " pid " + incident.pid),
    );
    const when = el(
      "span",
      "when",
      incident.duration === null ? ago(incident.detected_at) : "lasted " + duration(incident.duration),
    );
    li.append(badge(incident.state), what, when);
    return li;
  });
  $("incidents").replaceChildren(...items);
  const empty = $("no-incidents");
  empty.hidden = items.length > 0;
  empty.textContent = model.incidentProblem ? "Incident history unavailable: " + model.incidentProblem : "No incidents.";
}

// A click on an incident selects its span while it is open, the incident itself after.
export function bindIncidents(select) {
  $("incidents").addEventListener("click", (event) => {
    const li = event.target.closest("li");
    if (!li) return;
    const incident = model.incidents.find((i) => String(i.id) === li.dataset.id);
    if (!incident) return;
    const key = incident.instance_id + "/" + incident.span_id;
    if (model.nodes.has(key)) select({ type: "span", key });
    else select({ type: "incident", key: "incident:" + incident.id, incident });
  });
}
