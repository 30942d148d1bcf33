// agents-watchdog live page: polls the sidecar's JSON API and draws what is in flight.
//
// Thousands of open spans must not freeze the browser, so the span tree is virtualised:
// each poll rebuilds a plain array of visible rows (O(n), no DOM), and only the rows
// in view (a few dozen) exist as elements, reused as the list scrolls. Ages tick
// client-side from the last poll, touching only those rows.
"use strict";

(() => {
  // Polls follow each other after at least POLL_MS, and after POLL_LOAD times what the
  // last one took: with thousands of spans a poll costs the sidecar tens of milliseconds,
  // and it must not spend its time serving this page.
  const POLL_MS = 500;
  const POLL_LOAD = 8;
  const MAX_POLL_MS = 5000;
  const HIDDEN_POLL_MS = 5000; // a background tab asks less often
  const INCIDENT_EVERY = 2; // polls between refreshes of the incident list
  const TICK_MS = 250;
  const ROW_H = 26; // keep in step with --row-h in page.css
  const OVERSCAN = 12;
  const AUTO_EXPAND_LIMIT = 400; // above this many spans only troubled traces open by default
  const MAX_DEPTH = 64;
  const TOKEN_KEY = "agents-watchdog-token";
  const CONTAINERS = new Set(["trace", "task", "agent", "turn"]);

  const $ = (id) => document.getElementById(id);

  const model = {
    processes: [],
    spans: [],
    incidents: [],
    groups: [], // one per process: {process, key, roots, total, hung, orphaned}
    nodes: new Map(), // span key -> node
    rows: [], // visible rows, in order
    fetchedAt: performance.now(),
    selected: null, // {type: "span" | "process" | "incident", key}
    toggled: new Map(), // key -> expanded, for what the operator opened or closed
    filter: "",
    problemsOnly: false,
    polls: 0,
    paused: false, // waiting for a token
    timer: null,
  };

  // Measurements read by the tests (and handy in the console).
  const stats = { firstRenderMs: null, renders: 0, renderMs: [], fetchMs: [], spans: 0, rows: 0 };
  window.watchdogPage = { stats, model };

  // -- API ---------------------------------------------------------------------------

  class NeedsToken extends Error {}

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    const secret = token();
    if (secret) headers.Authorization = "Bearer " + secret;
    const response = await fetch(path, Object.assign({ cache: "no-store" }, options, { headers }));
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    const why = body && body.detail ? body.detail : response.statusText;
    if (response.status === 401) throw new NeedsToken(why);
    if (!response.ok) throw new ApiError(response.status, why);
    return body;
  }

  // -- polling -----------------------------------------------------------------------

  function schedule(delay) {
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
      apply(processes.processes, spans.spans, incidents);
      setConnection(true, "live · " + new Date().toLocaleTimeString());
      model.polls += 1;
    } catch (error) {
      if (error instanceof NeedsToken) {
        askForToken(error.message);
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

  function setConnection(ok, text) {
    const element = $("conn");
    element.textContent = text;
    element.className = "conn " + (ok ? "ok" : "error");
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !model.paused) schedule(0);
  });

  // -- model -------------------------------------------------------------------------

  function spanKey(span) {
    return span.instance_id + "/" + span.span_id;
  }

  function parentKey(span) {
    if (span.parent_id) return span.instance_id + "/" + span.parent_id;
    if (span.kind !== "trace") return span.instance_id + "/" + span.trace_id;
    return null;
  }

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

  function blockedThreads() {
    const blocked = new Set();
    for (const process of model.processes) {
      for (const loop of process.loops) {
        if (loop.blocked) blocked.add(process.instance_id + "/" + loop.thread_id);
      }
    }
    return blocked;
  }

  function build() {
    const blocked = blockedThreads();
    const nodes = new Map();
    for (const span of model.spans) {
      const key = spanKey(span);
      nodes.set(key, {
        key,
        span,
        children: [],
        parent: null,
        blocked: span.state === "open" && blocked.has(span.instance_id + "/" + span.thread_id),
        problems: 0, // hung, orphaned or blocked spans in this subtree, itself included
        size: 1,
      });
    }
    const roots = [];
    for (const node of nodes.values()) {
      const parent = nodes.get(parentKey(node.span));
      if (parent && parent !== node) {
        parent.children.push(node);
        node.parent = parent;
      } else {
        roots.push(node);
      }
    }
    // Subtree sizes and problem counts, deepest first (no recursion: depth is untrusted).
    const order = [];
    const stack = roots.map((node) => [node, 0]);
    while (stack.length) {
      const [node, depth] = stack.pop();
      order.push(node);
      if (depth < MAX_DEPTH) for (const child of node.children) stack.push([child, depth + 1]);
    }
    for (let i = order.length - 1; i >= 0; i -= 1) {
      const node = order[i];
      if (node.span.state !== "open" || node.blocked) node.problems += 1;
      node.children.sort(byStart);
      if (node.parent) {
        node.parent.problems += node.problems;
        node.parent.size += node.size;
      }
    }
    const groups = new Map();
    for (const process of model.processes) {
      groups.set(process.instance_id, groupOf(process));
    }
    for (const root of roots) {
      let group = groups.get(root.span.instance_id);
      if (!group) {
        // Listed before its process (the two requests raced): a stand-in header.
        const span = root.span;
        group = groupOf({
          service: span.service, host: span.host, pid: span.pid, instance_id: span.instance_id,
          state: "live", loops: [], heartbeat_age_seconds: 0,
        });
        groups.set(span.instance_id, group);
      }
      group.roots.push(root);
      group.total += root.size;
      group.problems += root.problems;
    }
    for (const group of groups.values()) {
      group.roots.sort((a, b) => (b.problems > 0) - (a.problems > 0) || byStart(a, b));
    }
    model.nodes = nodes;
    model.groups = [...groups.values()].sort(
      (a, b) =>
        (b.problems > 0) - (a.problems > 0) ||
        a.process.service.localeCompare(b.process.service) ||
        a.process.pid - b.process.pid,
    );
  }

  function groupOf(process) {
    const bad = process.state !== "live" || process.loops.some((loop) => loop.blocked);
    return {
      key: "process:" + process.instance_id,
      process,
      roots: [],
      total: 0,
      problems: bad ? 1 : 0,
    };
  }

  function byStart(a, b) {
    return a.span.started_at < b.span.started_at ? -1 : a.span.started_at > b.span.started_at ? 1 : 0;
  }

  function matches(node) {
    const text = model.filter;
    if (!text) return true;
    const span = node.span;
    return [span.name, span.kind, span.agent, span.service, span.span_id, span.trace_id, span.state]
      .some((value) => value && String(value).toLowerCase().includes(text));
  }

  function expanded(key, fallback) {
    const chosen = model.toggled.get(key);
    return chosen === undefined ? fallback : chosen;
  }

  function flatten() {
    const rows = [];
    const filtering = Boolean(model.filter) || model.problemsOnly;
    // Which nodes to show when filtering: the matches and the path down to them.
    let keep = null;
    if (filtering) {
      keep = new Set();
      for (const node of model.nodes.values()) {
        if (model.problemsOnly && !(node.span.state !== "open" || node.blocked)) continue;
        if (!matches(node)) continue;
        for (let up = node, depth = 0; up && depth < MAX_DEPTH && !keep.has(up); depth += 1) {
          keep.add(up);
          up = up.parent;
        }
      }
    }
    for (const group of model.groups) {
      const roots = keep ? group.roots.filter((root) => keep.has(root)) : group.roots;
      if (keep && roots.length === 0) continue;
      rows.push({ group, depth: 0 });
      if (!expanded(group.key, true)) continue;
      const stack = [];
      for (let i = roots.length - 1; i >= 0; i -= 1) stack.push([roots[i], 1]);
      while (stack.length) {
        const [node, depth] = stack.pop();
        rows.push({ node, depth });
        if (!isOpenRow(node) || depth >= MAX_DEPTH) continue;
        for (let i = node.children.length - 1; i >= 0; i -= 1) {
          const child = node.children[i];
          if (!keep || keep.has(child)) stack.push([child, depth + 1]);
        }
      }
    }
    model.rows = rows;
  }

  // -- formatting --------------------------------------------------------------------

  function elapsed() {
    return (performance.now() - model.fetchedAt) / 1000;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.floor(seconds) + " s";
    if (seconds < 3600) {
      const s = Math.floor(seconds % 60);
      return Math.floor(seconds / 60) + "m " + String(s).padStart(2, "0") + "s";
    }
    const m = Math.floor((seconds % 3600) / 60);
    return Math.floor(seconds / 3600) + "h " + String(m).padStart(2, "0") + "m";
  }

  function clock(iso) {
    if (!iso) return "–";
    const when = new Date(iso);
    return isNaN(when) ? iso : when.toLocaleTimeString();
  }

  function ago(iso) {
    if (!iso) return "";
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    return seconds < 0 ? "just now" : duration(seconds) + " ago";
  }

  function el(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined && text !== null) element.textContent = String(text);
    return element;
  }

  function badge(text, kind) {
    return el("span", "badge " + (kind || text), text);
  }

  // Model calls carry no name on the wire (privacy): say whose call it is instead.
  function label(span) {
    if (span.name) return span.name;
    return span.agent ? span.kind + " of " + span.agent : span.kind;
  }

  function stateText(span, blocked) {
    if (span.state === "hung") return "hung · " + (span.reason || "over threshold");
    if (span.state === "orphaned") return "orphaned · process died";
    if (blocked) return "open · event loop blocked";
    return "open";
  }

  // -- summary and processes ----------------------------------------------------------

  function setCount(id, count, text, alarm, raised) {
    const element = $(id);
    element.dataset.count = String(count);
    element.textContent = text;
    if (alarm) element.classList.toggle(alarm, raised);
  }

  function renderSummary() {
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

  function renderProcesses() {
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

  function timeoutWarning(text) {
    const warning = el("div", "timeout-warning", "⚠ " + text);
    warning.title = text;
    // A long sentence in a table of short cells: wrapped, small, in the warning colour.
    Object.assign(warning.style, { whiteSpace: "normal", maxWidth: "48ch", fontSize: "0.85em", color: "var(--late)" });
    return warning;
  }

  // "read 600 s · connect 5 s · 2 retries (openai default)"; null when not reported.
  function clientTimeouts(timeouts) {
    if (!timeouts) return null;
    const seconds = (value) => (value === null ? "no limit" : value + " s");
    return "read " + seconds(timeouts.read) + " · connect " + seconds(timeouts.connect) +
      (timeouts.max_retries === null ? "" : " · " + timeouts.max_retries + " retries") +
      " (" + timeouts.source + ")";
  }

  $("processes").tBodies[0].addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr) select({ type: "process", key: tr.dataset.key });
  });

  // -- the tree ----------------------------------------------------------------------

  const tree = $("tree");
  const spacer = $("tree-spacer");
  const pool = [];

  function makeRow() {
    const row = el("div", "row");
    row.setAttribute("role", "treeitem");
    const cell = el("span", "cell tree-cell");
    const indent = el("span", "indent");
    const twisty = el("button", "twisty");
    twisty.type = "button";
    twisty.tabIndex = -1;
    const kind = el("span", "kind");
    const name = el("span", "name");
    const extra = el("span", "extra");
    cell.append(indent, twisty, kind, name, extra);
    const age = el("span", "cell age num");
    const threshold = el("span", "cell threshold num");
    const state = el("span", "cell state-cell");
    row.append(cell, age, threshold, state);
    row.parts = { indent, twisty, kind, name, extra, age, threshold, state };
    tree.append(row);
    return row;
  }

  function renderTree() {
    const rows = model.rows;
    spacer.style.height = rows.length * ROW_H + "px";
    tree.dataset.rows = String(rows.length);
    $("no-spans").hidden = model.spans.length > 0 || model.processes.length === 0;
    const first = Math.max(0, Math.floor(tree.scrollTop / ROW_H) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((tree.scrollTop + tree.clientHeight) / ROW_H) + OVERSCAN);
    const count = Math.max(0, last - first);
    while (pool.length < count) pool.push(makeRow());
    for (let i = 0; i < pool.length; i += 1) {
      const row = pool[i];
      if (i < count) {
        fillRow(row, rows[first + i], first + i);
        row.hidden = false;
      } else if (!row.hidden) {
        // Spare rows keep nothing of what they showed.
        row.hidden = true;
        row.item = null;
        row.className = "row";
        delete row.dataset.key;
        delete row.dataset.index;
        delete row.dataset.kind;
        delete row.dataset.state;
      }
    }
  }

  function fillRow(row, item, index) {
    const p = row.parts;
    row.item = item;
    row.dataset.index = String(index);
    row.style.transform = "translateY(" + index * ROW_H + "px)";
    p.indent.style.width = item.depth * 16 + "px";
    const selectedKey = model.selected && model.selected.key;
    if (item.group) {
      const group = item.group;
      const process = group.process;
      const open = expanded(group.key, true);
      row.dataset.key = group.key;
      row.dataset.kind = "process";
      row.dataset.state = process.state;
      row.className = "row group" + (group.problems ? " contains-problem" : "") +
        (selectedKey === group.key ? " selected" : "");
      row.setAttribute("aria-expanded", String(open));
      p.twisty.className = "twisty";
      p.twisty.textContent = open ? "▾" : "▸";
      p.kind.className = "kind";
      p.kind.textContent = "process";
      p.name.textContent = process.service + " · " + process.host + " · pid " + process.pid;
      p.extra.textContent = group.roots.length + " traces, " + group.total + " spans";
      p.age.textContent = "";
      p.age.className = "cell age num";
      p.threshold.textContent = "";
      p.state.textContent = process.state + (process.loops.some((l) => l.blocked) ? " · loop blocked" : "") +
        (process.blind_reason ? " · " + process.blind_reason : "");
      return;
    }
    const node = item.node;
    const span = node.span;
    const hasChildren = node.children.length > 0;
    const open = hasChildren && isOpenRow(node);
    row.dataset.key = node.key;
    row.dataset.kind = span.kind;
    row.dataset.state = span.state;
    row.className = "row" + (index % 2 ? " odd" : "") + " state-" + span.state +
      (node.blocked ? " blocked" : "") +
      (span.state === "open" && node.problems > 0 ? " contains-problem" : "") +
      (selectedKey === node.key ? " selected" : "");
    row.setAttribute("aria-expanded", hasChildren ? String(open) : "false");
    p.twisty.className = hasChildren ? "twisty" : "twisty leaf";
    p.twisty.textContent = hasChildren ? (open ? "▾" : "▸") : "";
    p.kind.className = "kind k-" + span.kind;
    p.kind.textContent = span.kind;
    p.name.textContent = label(span);
    p.extra.textContent = hasChildren && !open ? "+" + (node.size - 1) + " below" : "";
    tickRow(row);
    p.threshold.textContent = duration(span.threshold_seconds);
    p.state.textContent = stateText(span, node.blocked);
  }

  function isOpenRow(node) {
    const filtering = Boolean(model.filter) || model.problemsOnly;
    return expanded(node.key, filtering || model.spans.length <= AUTO_EXPAND_LIMIT || node.problems > 0);
  }

  function tickRow(row) {
    const item = row.item;
    if (!item || !item.node) return;
    const span = item.node.span;
    const age = span.age_seconds + (span.state === "orphaned" ? 0 : elapsed());
    row.parts.age.textContent = duration(age);
    // A leaf past its threshold that the sidecar has not flagged yet (it will, shortly).
    const late = span.state === "open" && !CONTAINERS.has(span.kind) && age > span.threshold_seconds;
    row.parts.age.className = "cell age num" + (late ? " late" : "");
  }

  function toggle(key, open) {
    model.toggled.set(key, open);
    flatten();
    renderTree();
  }

  let scrollQueued = false;
  tree.addEventListener("scroll", () => {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      renderTree();
    });
  });
  window.addEventListener("resize", () => renderTree());

  tree.addEventListener("click", (event) => {
    const row = event.target.closest(".row");
    if (!row || !row.item) return;
    const item = row.item;
    if (event.target.closest(".twisty")) {
      if (item.group) toggle(item.group.key, !expanded(item.group.key, true));
      else if (item.node.children.length) toggle(item.node.key, !isOpenRow(item.node));
      return;
    }
    if (item.group) select({ type: "process", key: item.group.key });
    else select({ type: "span", key: item.node.key });
  });

  tree.addEventListener("keydown", (event) => {
    const rows = model.rows;
    if (!rows.length) return;
    let index = rows.findIndex((item) => itemKey(item) === (model.selected && model.selected.key));
    const item = rows[index];
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      index = Math.min(rows.length - 1, Math.max(0, index + (event.key === "ArrowDown" ? 1 : -1)));
      const next = rows[index];
      select({ type: next.group ? "process" : "span", key: itemKey(next) });
      const top = index * ROW_H;
      if (top < tree.scrollTop) tree.scrollTop = top;
      else if (top + ROW_H > tree.scrollTop + tree.clientHeight) tree.scrollTop = top + ROW_H - tree.clientHeight;
    } else if ((event.key === "ArrowRight" || event.key === "ArrowLeft") && item) {
      toggle(itemKey(item), event.key === "ArrowRight");
    } else {
      return;
    }
    event.preventDefault();
  });

  function itemKey(item) {
    return item.group ? item.group.key : item.node.key;
  }

  $("filter").addEventListener("input", (event) => {
    model.filter = event.target.value.trim().toLowerCase();
    flatten();
    tree.scrollTop = 0;
    renderTree();
  });
  $("problems-only").addEventListener("change", (event) => {
    model.problemsOnly = event.target.checked;
    flatten();
    tree.scrollTop = 0;
    renderTree();
  });
  $("expand-all").addEventListener("click", () => setAll(true));
  $("collapse-all").addEventListener("click", () => setAll(false));

  function setAll(open) {
    for (const group of model.groups) model.toggled.set(group.key, true);
    for (const node of model.nodes.values()) {
      if (node.children.length) model.toggled.set(node.key, open);
    }
    flatten();
    renderTree();
  }

  // -- incidents ---------------------------------------------------------------------

  function renderIncidents() {
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

  $("incidents").addEventListener("click", (event) => {
    const li = event.target.closest("li");
    if (!li) return;
    const incident = model.incidents.find((i) => String(i.id) === li.dataset.id);
    if (!incident) return;
    const key = incident.instance_id + "/" + incident.span_id;
    if (model.nodes.has(key)) select({ type: "span", key });
    else select({ type: "incident", key: "incident:" + incident.id, incident });
  });

  // -- detail ------------------------------------------------------------------------

  const detail = {
    key: null, // what the panel was built for
    signature: null, // of what it shows, to redraw only on change
    parts: null,
    span: null, // last known span (kept after it ends)
    incidentId: null,
    timelineText: "",
    lookups: 0,
  };

  function select(selection) {
    model.selected = selection;
    renderDetail(true);
    renderTree();
    renderProcesses();
    renderIncidents();
  }

  function renderDetail(fresh) {
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

  // Short facts in two pairs of columns, ids one to a line. Rebuilt only when something
  // changed, so that an id being selected for copying stays selected.
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

    const abort = el("section", "abort");
    abort.append(
      el("h3", "", "Stop this run"),
      el(
        "p",
        "muted",
        "cancel: cancel the task that owns the span, then the task running its trace. " +
          "terminate: then SIGTERM the process. kill: then SIGKILL. Each step waits for the " +
          "span to end first.",
      ),
    );
    // A form of its own, so the browser treats the token as a password field.
    const tokenForm = el("form");
    tokenForm.addEventListener("submit", (event) => event.preventDefault());
    const tokenLabel = el("label", "", "Token");
    const tokenInput = el("input");
    tokenInput.type = "password";
    tokenInput.id = "abort-token";
    tokenInput.autocomplete = "off";
    tokenInput.placeholder = "sidecar token";
    tokenInput.value = token();
    tokenLabel.append(tokenInput);
    tokenForm.append(tokenLabel);
    const buttons = ["timeout", "cancel", "terminate", "kill"].map((action) => {
      const button = el("button", action === "kill" ? "danger" : "", action === "timeout" ? "Time out the call" : action === "cancel" ? "Cancel run" : action === "terminate" ? "Terminate process" : "Kill process");
      button.type = "button";
      button.dataset.action = action;
      button.id = "abort-" + action;
      return button;
    });
    const buttonRow = el("div", "buttons");
    buttonRow.append(...buttons);
    const confirm = el("div", "confirm");
    confirm.hidden = true;
    const question = el("p");
    const yes = el("button", "danger", "Confirm abort");
    yes.type = "button";
    yes.id = "abort-confirm";
    const no = el("button", "quiet", "Back");
    no.type = "button";
    no.id = "abort-back";
    const confirmButtons = el("div", "buttons");
    confirmButtons.append(yes, no);
    confirm.append(question, confirmButtons);
    const result = el("p", "result");
    result.id = "abort-result";
    result.setAttribute("role", "status");
    abort.append(tokenForm, buttonRow, confirm, result);

    let pending = null;
    buttonRow.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button || button.disabled) return;
      if (!tokenInput.value.trim()) {
        showResult(result, false, "Enter the sidecar's token first: aborting always needs it.");
        tokenInput.focus();
        return;
      }
      pending = button.dataset.action;
      const span = detail.span;
      question.textContent =
        "Abort " + span.kind + " \u201c" + label(span) + "\u201d in " + span.service +
        " (pid " + span.pid + ") with \u201c" + pending + "\u201d?";
      confirm.hidden = false;
      yes.focus();
    });
    no.addEventListener("click", () => {
      pending = null;
      confirm.hidden = true;
    });
    yes.addEventListener("click", async () => {
      const action = pending;
      const span = detail.span;
      confirm.hidden = true;
      if (!action || !span) return;
      sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
      showResult(result, true, "Sending " + action + "…");
      try {
        const reply = await api("/v1/spans/" + encodeURIComponent(span.span_id) + "/abort", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ action, instance_id: span.instance_id }),
        });
        showResult(
          result,
          true,
          "Abort started: " + reply.steps.join(" → ") + (reply.dry_run ? " (dry run: nothing is sent)" : ""),
        );
      } catch (error) {
        const why = error instanceof NeedsToken ? "the token was refused (" + error.message + ")" : error.message;
        showResult(result, false, "Abort refused: " + why);
      }
    });

    root.replaceChildren(head, gone, fields, ids, cause, stackHead, stack, timelineHead, timelineNote, timeline, abort);
    detail.parts = { kind, title, state, gone, fields, ids, cause, stackHead, stack, timeline, timelineNote, timelineHead, buttons };
  }

  function showResult(element, ok, text) {
    element.textContent = text;
    element.className = "result " + (ok ? "ok" : "error");
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

  // -- ticking -----------------------------------------------------------------------

  setInterval(() => {
    for (const row of pool) if (!row.hidden) tickRow(row);
    const since = elapsed();
    for (const cell of document.querySelectorAll("td.heartbeat, dd.heartbeat")) {
      cell.textContent = duration(Number(cell.dataset.base) + since);
    }
    const age = document.querySelector("#detail .age-live");
    if (age) age.textContent = duration(Number(age.dataset.base) + (age.dataset.ticks === "1" ? since : 0));
  }, TICK_MS);

  // -- token -------------------------------------------------------------------------

  const dialog = $("token-dialog");

  function askForToken(message) {
    model.paused = true;
    clearTimeout(model.timer);
    setConnection(false, "token needed");
    $("token-message").textContent = token()
      ? "The sidecar refused the token (" + message + "). Enter the right one."
      : "This sidecar needs its token (server.token) to show its data.";
    if (!dialog.open) dialog.showModal();
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    const field = document.getElementById("abort-token");
    if (field && value) field.value = value;
    dialog.close();
    model.paused = false;
    schedule(0);
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-input").value = "";
    const field = document.getElementById("abort-token");
    if (field) field.value = "";
    dialog.close();
    model.paused = false;
    schedule(0);
  });
  $("token-close").addEventListener("click", () => dialog.close());
  $("token-button").addEventListener("click", () => {
    $("token-message").textContent = "The token is kept in this tab only.";
    $("token-input").value = token();
    dialog.showModal();
  });

  poll();
})();
