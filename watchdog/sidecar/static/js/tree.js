// The span tree, virtualised: only the rows in view (a few dozen) exist as elements,
// reused as the list scrolls. Ages tick client-side, touching only those rows.

import { $, el } from "./dom.js";
import { duration, label, stateText } from "./format.js";
import { elapsed, expanded, flatten, isOpenRow, model } from "./model.js";

const ROW_H = 26; // keep in step with --row-h in page.css
const OVERSCAN = 12;
const CONTAINERS = new Set(["trace", "task", "agent", "turn"]);

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

export function renderTree() {
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

// Advance the ages shown in the rows in view.
export function tickTree() {
  for (const row of pool) if (!row.hidden) tickRow(row);
}

function toggle(key, open) {
  model.toggled.set(key, open);
  flatten();
  renderTree();
}

function itemKey(item) {
  return item.group ? item.group.key : item.node.key;
}

function setAll(open) {
  for (const group of model.groups) model.toggled.set(group.key, true);
  for (const node of model.nodes.values()) {
    if (node.children.length) model.toggled.set(node.key, open);
  }
  flatten();
  renderTree();
}

// Scrolling, clicks, keys and the filter controls above the tree; `select` is told
// which row the operator chose.
export function bindTree(select) {
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
}
