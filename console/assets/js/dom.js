// dom.js: building the page without HTML strings. Every piece of text,
// server-supplied or not, goes in through text nodes (textContent), never
// innerHTML, so a model name or a Nomad message cannot become markup.

// el creates an element. attrs: "class", "text" (textContent), "on<event>"
// handlers (functions), booleans (true sets the attribute, false omits it),
// anything else as an attribute. children: nodes or strings (text nodes);
// null and false are skipped.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') node.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'value') node.value = String(v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, ...children);
  return node;
}

// append adds children (nodes or strings) to node.
export function append(node, ...children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// clear removes node's children.
export function clear(node) {
  node.replaceChildren();
  return node;
}

// setText sets node's text, only when it changed (keeps selections and
// screen readers quiet on polls).
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

// usd formats dollars: "$1.50", "$0.0042" for small non-zero amounts.
export function usd(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  if (n !== 0 && Math.abs(n) < 0.01) return '$' + n.toFixed(4);
  return '$' + n.toFixed(2);
}

// num formats a number with at most digits fraction digits.
export function num(n, digits = 2) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits });
}

// ago says how long before now t (a Date or RFC 3339 string) was: "12s ago".
export function ago(t, now = Date.now()) {
  if (!t) return 'never';
  const ms = now - new Date(t).getTime();
  if (Number.isNaN(ms)) return '—';
  return duration(Math.max(0, ms) / 1000) + ' ago';
}

// duration formats seconds: "45s", "3m 20s", "2h 5m", "3d 4h".
export function duration(s) {
  s = Math.round(s);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

// time formats an RFC 3339 time in the browser's locale, with its full ISO
// form as a tooltip.
export function timeEl(t) {
  if (!t) return el('span', { text: '—' });
  const d = new Date(t);
  return el('time', { datetime: d.toISOString(), title: d.toISOString(), text: d.toLocaleString() });
}

// notFound is the not-found state: #not-found, saying what was not found.
export function notFound(what) {
  return el('section', { id: 'not-found', class: 'panel empty' },
    el('h1', { text: 'Not found' }),
    el('p', { text: `${what} not found.` }),
    el('p', {}, el('a', { href: '/', text: 'Back to your deployments' })));
}

// modelPath is the demo page of a full model name "owner/model".
export function modelPath(fullName) {
  return '/' + fullName.split('/').map(encodeURIComponent).join('/');
}

// replace replaces node's children with children (nodes or strings; null
// and false skipped, unlike Element.replaceChildren, which writes "null").
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}
