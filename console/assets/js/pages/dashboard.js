// dashboard.js: the caller's deployments, live (polled every 3 s), with
// this week's cost and the last request of each.
import { api, q, isMissing, weekStart, rfc3339 } from '../api.js';
import { el, replace, setText, usd, ago, modelPath } from '../dom.js';
import { every } from '../poll.js';

const STATUSES = ['all', 'initializing', 'deploying', 'running', 'stopped', 'failed'];
const COLS = [
  ['model', 'Model'], ['status', 'Status'], ['gpu', 'GPU'], ['instances', 'Instances'],
  ['minmax', 'Min / max'], ['cost', 'Cost this week'], ['last_request', 'Last request'],
];

// instancesText is the dashboard's "1 running / 0 pending / 1 desired".
export function instancesText(inst) {
  return `${inst.running} running / ${inst.pending} pending / ${inst.desired} desired`;
}

export function mount(root) {
  document.title = 'Deployments · thaw';
  const filter = el('select', { id: 'status-filter', name: 'status' },
    STATUSES.map((s) => el('option', { value: s, text: s })));
  const status = () => (filter.value === 'all' ? '' : filter.value);
  const tbody = el('tbody');
  const table = el('table', { id: 'deployments', class: 'grid cards' },
    el('caption', { class: 'visually-hidden', text: 'Your deployments' }),
    el('thead', {}, el('tr', {}, COLS.map(([, label]) => el('th', { scope: 'col', text: label })))),
    tbody);
  const empty = el('p', { class: 'empty', hidden: true });
  const error = el('p', { class: 'error', role: 'status' });
  root.append(el('section', { class: 'page' },
    el('div', { class: 'page-head' },
      el('h1', { text: 'Deployments' }),
      el('a', { id: 'new-deployment', class: 'button', href: '/console/new', text: 'New deployment' })),
    el('div', { class: 'toolbar' },
      el('label', { for: 'status-filter', text: 'Status' }), filter),
    error,
    el('div', { class: 'table-wrap' }, table),
    empty));

  const costs = new Map(); // deploy_id -> cost this week (USD)
  const last = new Map(); // deploy_id -> last_request_at (or null)
  let list = [];

  const refresh = async (signal) => {
    try {
      list = await api('/deploy/list' + q({ status: status() }), { signal });
      setText(error, '');
    } catch (e) {
      if (e.name === 'AbortError') return;
      setText(error, `Cannot list deployments: ${e.message}`);
      return;
    }
    draw(tbody, list, costs, last);
    empty.hidden = list.length > 0;
    empty.replaceChildren(status()
      ? `No ${status()} deployments.`
      : el('span', {}, 'No deployments yet. ', el('a', { href: '/console/new', text: 'Create one' }), '.'));
    await Promise.all(list.map(async (d) => {
      try {
        const st = await api(`/deploy/${encodeURIComponent(d.deploy_id)}/stats?step=1h`, { signal });
        last.set(d.deploy_id, st.now ? st.now.last_request_at || null : null);
      } catch (e) {
        if (!isMissing(e)) throw e;
      }
    })).catch(() => {});
    draw(tbody, list, costs, last);
  };
  const refreshCost = async (signal) => {
    try {
      const rep = await api('/usage' + q({ group_by: 'deployment', from: rfc3339(weekStart()) }), { signal });
      costs.clear();
      for (const it of rep.items || []) costs.set(it.deploy_id, (costs.get(it.deploy_id) || 0) + it.cost_usd);
      costs.set('', true); // known: deployments absent from the report cost nothing
      draw(tbody, list, costs, last);
    } catch (e) {
      if (e.name !== 'AbortError') costs.clear();
    }
  };

  let stop = every(3000, refresh);
  const stopCost = every(15000, refreshCost);
  filter.addEventListener('change', () => { stop(); stop = every(3000, refresh); });
  return () => { stop(); stopCost(); };
}

// draw updates the table in place: one row per deployment, keyed by
// data-deploy-id, so focus and selection survive a refresh.
function draw(tbody, list, costs, last) {
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.deployId, tr]));
  const keep = new Set();
  list.forEach((d, i) => {
    let tr = rows.get(d.deploy_id);
    if (!tr) tr = newRow(d);
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    keep.add(d.deploy_id);
    fill(tr, d, costs, last);
  });
  for (const [id, tr] of rows) if (!keep.has(id)) tr.remove();
}

function newRow(d) {
  const tr = el('tr', { 'data-deploy-id': d.deploy_id });
  for (const [col, label] of COLS) tr.append(el('td', { 'data-col': col, 'data-label': label }));
  const model = tr.querySelector('[data-col="model"]');
  model.append(
    el('a', { class: 'model', href: '/console/deployments/' + encodeURIComponent(d.deploy_id), text: d.full_name }),
    el('span', { class: 'sub' },
      el('a', { href: modelPath(d.full_name), text: 'demo' }), ' · ',
      el('a', { href: modelPath(d.full_name) + '/api', text: 'API' })));
  return tr;
}

function fill(tr, d, costs, last) {
  const cell = (c) => tr.querySelector(`[data-col="${c}"]`);
  const status = cell('status');
  status.dataset.status = d.status;
  replace(status, el('span', { class: 'badge', 'data-status': d.status, text: d.status }),
    d.fail_reason ? el('span', { class: 'sub reason', text: d.fail_reason }) : null);
  setText(cell('gpu'), `${d.config.num_gpus} × ${d.config.gpu}`);
  replace(cell('instances'), instancesText(d.instances),
    d.instances.reason ? el('span', { class: 'sub reason', text: d.instances.reason }) : null);
  setText(cell('minmax'), `${d.settings.min_instances} / ${d.settings.max_instances}`);
  setText(cell('cost'), costs.has('') ? usd(costs.get(d.deploy_id) || 0) : '—');
  setText(cell('last_request'), last.has(d.deploy_id) ? ago(last.get(d.deploy_id)) : '—');
}
