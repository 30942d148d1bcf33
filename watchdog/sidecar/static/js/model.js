// What the page knows: the last poll's data, the span forest built from it, and the
// flat list of rows to show.
//
// Thousands of open spans must not freeze the browser: each poll rebuilds a plain
// array of visible rows (O(n), no DOM); only tree.js turns the few in view into elements.

const AUTO_EXPAND_LIMIT = 400; // above this many spans only troubled traces open by default
export const MAX_DEPTH = 64;

export const model = {
  processes: [],
  spans: [],
  incidents: [],
  groups: [], // one per process: {process, key, roots, total, problems}
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
export const stats = { firstRenderMs: null, renders: 0, renderMs: [], fetchMs: [], spans: 0, rows: 0 };

// Seconds since the last poll's data arrived: ages tick client-side from it.
export function elapsed() {
  return (performance.now() - model.fetchedAt) / 1000;
}

function spanKey(span) {
  return span.instance_id + "/" + span.span_id;
}

function parentKey(span) {
  if (span.parent_id) return span.instance_id + "/" + span.parent_id;
  if (span.kind !== "trace") return span.instance_id + "/" + span.trace_id;
  return null;
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

// The span forest of model.spans, grouped by process, troubled ones first.
export function build() {
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

// Whether a row is open: as the operator last set it, else `fallback`.
export function expanded(key, fallback) {
  const chosen = model.toggled.get(key);
  return chosen === undefined ? fallback : chosen;
}

export function isOpenRow(node) {
  const filtering = Boolean(model.filter) || model.problemsOnly;
  return expanded(node.key, filtering || model.spans.length <= AUTO_EXPAND_LIMIT || node.problems > 0);
}

// model.rows from model.groups: the open rows, filtered, in display order.
export function flatten() {
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
