// Building blocks of every view: find an element, make one, make a badge.

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined && text !== null) element.textContent = String(text);
  return element;
}

export function badge(text, kind) {
  return el("span", "badge " + (kind || text), text);
}
