// usage.js: spend this week and month, the spending limit (settable),
// weekly statements (with a CSV download) and the account's events.
import { api, raw, isMissing } from '../api.js';
import { el, setText, usd, num, timeEl } from '../dom.js';
import { every } from '../poll.js';

export function mount(root) {
  document.title = 'Usage · thaw';
  const v = {
    week: el('span', { id: 'spend-week', class: 'big', text: '—' }),
    month: el('span', { id: 'spend-month', class: 'big', text: '—' }),
    burn: el('p', { class: 'help' }),
    state: el('p', { role: 'status' }),
    limit: el('input', { id: 'limit-input', name: 'spending_limit_usd', type: 'number', inputmode: 'decimal', min: '0', step: '0.01' }),
    save: el('button', { id: 'limit-save', type: 'submit', text: 'Set limit' }),
    limitError: el('p', { id: 'limit-error', class: 'error', role: 'alert' }),
    limitOK: el('p', { class: 'ok', role: 'status' }),
    cap: el('p', { class: 'help' }),
    statements: el('tbody'),
    stmtNote: el('p', { class: 'empty' }),
    csv: el('button', { id: 'download-csv', type: 'button', class: 'secondary', text: 'Download CSV' }),
    csvError: el('p', { class: 'error', role: 'alert' }),
    events: el('ul', { id: 'account-events', class: 'plain feed' }),
    eventsNote: el('p', { class: 'empty' }),
  };
  const limitForm = el('form', { class: 'inline', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: 'limit-input', text: 'Monthly limit (USD, 0 = none)' }), v.limit), v.save);
  root.append(el('section', { class: 'page' },
    el('div', { class: 'page-head' }, el('h1', { text: 'Usage and account' })),
    el('div', { class: 'grid2' },
      el('section', { class: 'panel', 'aria-labelledby': 'h-spend' },
        el('h2', { id: 'h-spend', text: 'Spend' }),
        el('div', { class: 'counters' },
          el('div', {}, el('span', { text: 'This week' }), v.week),
          el('div', {}, el('span', { text: 'This month' }), v.month)),
        v.burn, v.state),
      el('section', { class: 'panel', 'aria-labelledby': 'h-limit' },
        el('h2', { id: 'h-limit', text: 'Spending limit' }),
        el('p', { class: 'help', text: 'At 100% every deployment drains to zero and inference answers 429 until the limit is raised or the month turns. You are told at 50%, 80% and 100%.' }),
        limitForm, v.cap, v.limitError, v.limitOK)),
    el('section', { class: 'panel', 'aria-labelledby': 'h-statements' },
      el('div', { class: 'page-head' }, el('h2', { id: 'h-statements', text: 'Weekly statements' }), v.csv),
      el('p', { class: 'help', text: 'Monday 00:00 UTC to the next Monday; the current week is not final.' }),
      v.csvError,
      el('div', { class: 'table-wrap' }, el('table', { id: 'statements', class: 'grid cards' },
        el('thead', {}, el('tr', {}, ['Week', 'Lines', 'GPU-hours', 'Total', 'State'].map((h) => el('th', { scope: 'col', text: h })))),
        v.statements)),
      v.stmtNote),
    el('section', { class: 'panel', 'aria-labelledby': 'h-events' },
      el('h2', { id: 'h-events', text: 'Account events' }), v.eventsNote, v.events)));

  v.limit.addEventListener('input', () => { v.limit.dataset.dirty = '1'; });
  limitForm.addEventListener('submit', (e) => { e.preventDefault(); saveLimit(v); });
  v.csv.addEventListener('click', () => downloadCSV(v));
  const stops = [
    every(10000, (signal) => refreshAccount(v, signal)),
    every(60000, (signal) => refreshStatements(v, signal)),
    every(15000, (signal) => refreshEvents(v, signal)),
  ];
  return () => stops.forEach((s) => s());
}

// read GETs path. When that fails (other than by the page going away), it
// says why in note, naming what was read, and returns null.
async function read(path, signal, note, what) {
  try {
    return await api(path, { signal });
  } catch (e) {
    if (e.name !== 'AbortError') {
      setText(note, isMissing(e) ? `${what} is not metered on this thaw.` : `Cannot read ${what.toLowerCase()}: ${e.message}`);
    }
    return null;
  }
}

async function refreshAccount(v, signal) {
  const a = await read('/account', signal, v.state, 'Spend');
  if (!a) return;
  setText(v.week, usd(a.spent_this_week_usd));
  setText(v.month, usd(a.spent_this_month_usd));
  setText(v.burn, `Running instances cost ${usd(a.burn_rate_usd_per_hour)} per hour now.` +
    (a.limit_reached_at ? ` At that rate the limit is reached ${new Date(a.limit_reached_at).toLocaleString()}.` : ''));
  setText(v.state, a.blocked ? `Blocked: ${a.blocked_reason || 'spending limit reached'}.` : '');
  v.state.className = a.blocked ? 'error' : '';
  if (document.activeElement !== v.limit && !v.limit.dataset.dirty) v.limit.value = a.spending_limit_usd;
  setText(v.cap, a.spending_limit_cap_usd !== null && a.spending_limit_cap_usd !== undefined
    ? `Your operator caps your monthly spend at ${usd(a.spending_limit_cap_usd)}: the limit cannot be higher or removed.` : '');
}

async function saveLimit(v) {
  setText(v.limitError, '');
  setText(v.limitOK, '');
  v.limit.removeAttribute('aria-invalid');
  const typed = v.limit.value.trim();
  const n = Number(typed);
  v.save.disabled = true;
  try {
    const a = await api('/account', { method: 'PUT', body: { spending_limit_usd: typed === '' || !Number.isFinite(n) ? typed : n } });
    delete v.limit.dataset.dirty;
    v.limit.value = a.spending_limit_usd;
    setText(v.limitOK, a.spending_limit_usd ? `Limit set to ${usd(a.spending_limit_usd)} a month.` : 'No limit.');
    refreshAccount(v, new AbortController().signal);
  } catch (e) {
    setText(v.limitError, e.message);
    v.limit.setAttribute('aria-invalid', 'true');
    v.limit.focus();
  } finally {
    v.save.disabled = false;
  }
}

async function refreshStatements(v, signal) {
  const body = await read('/usage/invoices', signal, v.stmtNote, 'Usage');
  if (!body) return;
  const sts = [...(body.statements || [])].reverse(); // newest first
  setText(v.stmtNote, sts.length ? '' : 'No statements yet.');
  v.statements.replaceChildren(...sts.map((s) => {
    const hours = s.lines.reduce((h, l) => h + l.gpu_hours, 0);
    const start = s.start.slice(0, 10);
    return el('tr', { 'data-week': start },
      el('td', { 'data-label': 'Week' }, `${start} to ${s.end.slice(0, 10)}`),
      el('td', { 'data-label': 'Lines' }, s.lines.length
        ? el('ul', { class: 'plain' }, s.lines.map((l) => el('li', { text: `${l.model} · ${l.gpu}: ${num(l.gpu_hours, 3)} h × ${usd(l.rate_usd)} = ${usd(l.amount_usd)}` })))
        : '—'),
      el('td', { class: 'num', 'data-label': 'GPU-hours', text: num(hours, 3) }),
      el('td', { class: 'num', 'data-label': 'Total', text: usd(s.total_usd) }),
      el('td', { 'data-label': 'State', text: s.final ? 'final' : 'in progress' }));
  }));
}

// downloadCSV fetches the statements as CSV with the token in the header
// (a plain link could not send it) and saves them through a Blob URL.
async function downloadCSV(v) {
  setText(v.csvError, '');
  v.csv.disabled = true;
  try {
    const res = await raw('/usage/invoices', { accept: 'text/csv' });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: 'thaw-statements.csv', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    setText(v.csvError, `Cannot download the statements: ${e.message}`);
  } finally {
    v.csv.disabled = false;
  }
}

async function refreshEvents(v, signal) {
  const body = await read('/account/events', signal, v.eventsNote, 'Account events');
  if (!body) return;
  const evs = [...(body.events || [])].reverse();
  setText(v.eventsNote, evs.length ? '' : 'Nothing to report: no threshold crossed, no deployment idle.');
  v.events.replaceChildren(...evs.map((e) => el('li', { 'data-type': e.type },
    timeEl(e.at), el('span', { class: 'type', text: e.type }), el('span', { class: 'msg', text: e.message }))));
}
