// deployment.js: one deployment, live: status and instances, in-flight and
// held requests, min/max settings, delete, the events feed (SSE), charts
// over the last hour or day, and its usage and cost.
import { api, q, isMissing, rfc3339 } from '../api.js';
import { el, setText, usd, num, duration, timeEl, notFound, modelPath } from '../dom.js';
import { every } from '../poll.js';
import { navigate } from '../router.js';
import { Charts } from '../charts.js';
import { Feed, follow } from '../events.js';
import { instancesText } from './dashboard.js';

const RANGES = { '1h': 3600, '1d': 86400 };

export function mount(root, { id }) {
  document.title = 'Deployment · thaw';
  const ctl = new AbortController();
  const stops = [];
  const stopAll = () => { ctl.abort(); stops.forEach((s) => s()); if (view) view.charts.destroy(); };
  let view = null;
  const loading = el('p', { class: 'empty', text: 'Loading…' });
  root.append(loading);
  const path = `/deploy/${encodeURIComponent(id)}`;

  (async () => {
    let d;
    try {
      d = await api(path, { signal: ctl.signal });
    } catch (e) {
      if (ctl.signal.aborted) return;
      loading.replaceWith(isMissing(e) ? notFound(`Deployment ${id}`) : el('p', { class: 'error', role: 'alert', text: e.message }));
      return;
    }
    view = build(d, path);
    view.signal = ctl.signal;
    loading.replaceWith(view.root);
    document.title = `${d.full_name} · thaw`;
    stops.push(every(2000, (signal) => refreshDeployment(view, path, signal)));
    stops.push(every(2000, (signal) => refreshInstances(view, path, signal)));
    stops.push(every(2000, (signal) => refreshNow(view, path, signal)));
    stops.push(every(10000, (signal) => refreshCharts(view, path, signal)));
    stops.push(every(30000, (signal) => refreshUsage(view, path, d.created_at, signal)));
    follow(id, { onEvent: (e) => view.feed.add(e), onStatus: (s) => setText(view.feed.status, s ? `Feed: ${s}` : ''), signal: ctl.signal });
    wire(view, path);
  })();
  return stopAll;
}

// build makes the page's elements for deployment d.
function build(d, path) {
  const v = {
    d, range: '1h',
    status: el('span', { id: 'deployment-status', class: 'badge', 'data-status': d.status, text: d.status }),
    failReason: el('p', { class: 'error', role: 'status' }),
    counts: el('p', {}),
    reason: el('p', { class: 'sub reason' }),
    instances: el('ul', { id: 'instances', class: 'plain' }),
    instancesNote: el('p', { class: 'help' }),
    inFlight: el('span', { id: 'in-flight', class: 'big', text: '0' }),
    held: el('span', { id: 'held', class: 'big', text: '0' }),
    min: el('input', { id: 'settings-min', name: 'settings.min_instances', type: 'number', inputmode: 'numeric', step: '1', value: d.settings.min_instances }),
    max: el('input', { id: 'settings-max', name: 'settings.max_instances', type: 'number', inputmode: 'numeric', step: '1', value: d.settings.max_instances }),
    save: el('button', { id: 'settings-save', type: 'submit', text: 'Save' }),
    settingsError: el('p', { id: 'settings-error', class: 'error', role: 'alert' }),
    settingsOK: el('p', { class: 'ok', role: 'status' }),
    usage: el('div', { id: 'usage' }, el('p', { class: 'empty', text: 'Loading usage…' })),
    del: el('button', { id: 'delete', type: 'button', class: 'danger', text: 'Delete deployment' }),
    confirm: el('button', { id: 'confirm-delete', type: 'button', class: 'danger', text: 'Delete' }),
    cancel: el('button', { id: 'cancel-delete', type: 'button', class: 'secondary', text: 'Cancel' }),
    deleteError: el('p', { class: 'error', role: 'alert' }),
    r1h: el('button', { id: 'range-1h', type: 'button', 'aria-pressed': 'true', text: 'Last hour' }),
    r1d: el('button', { id: 'range-1d', type: 'button', 'aria-pressed': 'false', text: 'Last day' }),
    chartsError: el('p', { class: 'help' }),
    charts: new Charts(),
    feed: new Feed(),
  };
  v.dialog = el('dialog', { id: 'delete-dialog', 'aria-labelledby': 'delete-title' },
    el('h2', { id: 'delete-title', text: `Delete ${d.full_name}?` }),
    el('p', { text: 'Its instances stop and its GPUs are freed. Requests to it fail from then on. Its usage stays in your statements.' }),
    v.deleteError, el('div', { class: 'actions' }, v.confirm, v.cancel));
  v.settingsForm = el('form', { class: 'inline', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: 'settings-min', text: 'Min instances' }), v.min),
    el('div', { class: 'field' }, el('label', { for: 'settings-max', text: 'Max instances' }), v.max),
    v.save);
  v.root = el('section', { id: 'deployment', class: 'page', 'data-deploy-id': d.deploy_id },
    el('div', { class: 'page-head' },
      el('h1', {}, d.full_name, ' ', v.status),
      el('div', { class: 'actions' },
        el('a', { id: 'demo-link', class: 'button', href: modelPath(d.full_name), text: 'Try it' }),
        el('a', { id: 'api-link', class: 'button secondary', href: modelPath(d.full_name) + '/api', text: 'API' }))),
    v.failReason,
    el('div', { class: 'grid2' },
      el('section', { class: 'panel', 'aria-labelledby': 'h-instances' },
        el('h2', { id: 'h-instances', text: 'Instances' }), v.counts, v.reason, v.instancesNote, v.instances,
        el('div', { class: 'counters' },
          el('div', {}, el('span', { text: 'In flight' }), v.inFlight),
          el('div', {}, el('span', { text: 'Held (waiting)' }), v.held))),
      el('section', { class: 'panel', 'aria-labelledby': 'h-settings' },
        el('h2', { id: 'h-settings', text: 'Scaling' }), v.settingsForm, v.settingsError, v.settingsOK,
        facts(d)),
      el('section', { class: 'panel', 'aria-labelledby': 'h-usage' },
        el('h2', { id: 'h-usage', text: 'Usage and cost' }), v.usage,
        el('div', { class: 'actions' }, v.del))),
    el('section', { class: 'panel', 'aria-labelledby': 'h-metrics' },
      el('div', { class: 'page-head' }, el('h2', { id: 'h-metrics', text: 'Metrics' }),
        el('div', { class: 'range', role: 'group', 'aria-label': 'Time range' }, v.r1h, v.r1d)),
      v.chartsError, v.charts.root),
    el('section', { class: 'panel', 'aria-labelledby': 'h-events' },
      el('h2', { id: 'h-events', text: 'Events' }), v.feed.root),
    v.dialog);
  showDeployment(v, d, true);
  return v;
}

function facts(d) {
  const c = d.config;
  const row = (k, val) => [el('dt', { text: k }), el('dd', {}, val)];
  return el('dl', { class: 'facts' },
    row('GPU', `${c.num_gpus} × ${c.gpu}`),
    row('Max batch size', String(c.max_batch_size)),
    row('Weights', c.weights.repo + (c.weights.revision ? '@' + c.weights.revision : '')),
    c.extra_args && c.extra_args.length ? row('Extra args', el('code', { text: c.extra_args.join(' ') })) : null,
    row('Deploy ID', el('code', { text: d.deploy_id })),
    row('Created', timeEl(d.created_at)));
}

// showDeployment refreshes the parts of the page the deploy object gives;
// the settings inputs only when asked (not while the user edits them).
function showDeployment(v, d, settings) {
  v.d = d;
  setText(v.status, d.status);
  v.status.dataset.status = d.status;
  setText(v.failReason, d.fail_reason || '');
  setText(v.counts, instancesText(d.instances));
  setText(v.reason, d.instances.reason || '');
  if (settings) {
    v.min.value = d.settings.min_instances;
    v.max.value = d.settings.max_instances;
  }
}

async function refreshDeployment(v, path, signal) {
  try {
    const d = await api(path, { signal });
    const editing = v.settingsForm.contains(document.activeElement) || v.min.dataset.dirty || v.max.dataset.dirty;
    showDeployment(v, d, !editing);
  } catch (e) {
    if (isMissing(e) && e.code === 'deployment_not_found') setText(v.failReason, 'This deployment no longer exists.');
  }
}

async function refreshInstances(v, path, signal) {
  let list;
  try {
    list = (await api(path + '/instances', { signal })).instances || [];
    setText(v.instancesNote, list.length ? '' : 'No instances.');
  } catch (e) {
    if (e.name === 'AbortError') return;
    setText(v.instancesNote, isMissing(e) && e.code !== 'deployment_not_found'
      ? 'Per-instance state is not available on this thaw.' : `Cannot read instances: ${e.message}`);
    list = [];
  }
  const now = Date.now();
  v.instances.replaceChildren(...list.map((i) => el('li', { 'data-state': i.state, 'data-instance-id': i.id || '' },
    el('span', { class: 'state', text: i.state }),
    el('code', { class: 'id', text: i.id || '(not placed)' }),
    el('span', { class: 'sub', text: (i.since ? `for ${duration(Math.max(0, now - Date.parse(i.since)) / 1000)}` : '') + (i.ready_at ? `, ready since ${new Date(i.ready_at).toLocaleTimeString()}` : '') }),
    i.reason ? el('span', { class: 'sub reason', text: i.reason }) : null)));
}

async function refreshNow(v, path, signal) {
  try {
    const st = await api(path + '/stats?step=1h', { signal });
    if (st.now) {
      setText(v.inFlight, num(st.now.in_flight, 0));
      setText(v.held, num(st.now.held, 0));
    }
  } catch { /* the charts say why */ }
}

async function refreshCharts(v, path, signal) {
  const to = new Date();
  const from = new Date(to.getTime() - RANGES[v.range] * 1000);
  try {
    const st = await api(path + '/stats' + q({ from: rfc3339(from) }), { signal });
    setText(v.chartsError, '');
    v.charts.update(st);
  } catch (e) {
    if (e.name === 'AbortError') return;
    setText(v.chartsError, isMissing(e) && e.code !== 'deployment_not_found'
      ? 'Metrics are not available on this thaw.' : `Cannot read metrics: ${e.message}`);
    v.charts.update(null);
  }
}

async function refreshUsage(v, path, createdAt, signal) {
  let rep;
  try {
    rep = await api(path + '/usage' + q({ from: createdAt ? rfc3339(new Date(createdAt)) : '' }), { signal });
  } catch (e) {
    if (e.name === 'AbortError') return;
    v.usage.replaceChildren(el('p', { class: 'empty', text: isMissing(e) && e.code !== 'deployment_not_found' ? 'Usage is not metered on this thaw.' : `Cannot read usage: ${e.message}` }));
    return;
  }
  const t = rep.total;
  const row = (k, val) => [el('dt', { text: k }), el('dd', { text: val })];
  v.usage.replaceChildren(el('dl', { class: 'facts' },
    row('GPU-hours', num(t.gpu_seconds / 3600, 3)),
    row('Cost so far', usd(t.cost_usd)),
    row('Of which loading', `${num(t.loading_seconds, 1)} GPU-s`),
    row('Requests', num(t.requests, 0)),
    row('Tokens', `${num(t.prompt_tokens, 0)} in, ${num(t.completion_tokens, 0)} out`)),
  el('p', { class: 'help' }, 'Since the deployment was created, as of ', timeEl(rep.to), '.'));
}

// wire connects the page's controls: settings, delete, range.
function wire(v, path) {
  for (const input of [v.min, v.max]) input.addEventListener('input', () => { input.dataset.dirty = '1'; });
  v.settingsForm.addEventListener('submit', (e) => { e.preventDefault(); saveSettings(v, path); });
  v.del.addEventListener('click', () => { setText(v.deleteError, ''); v.dialog.showModal(); v.cancel.focus(); });
  v.cancel.addEventListener('click', () => v.dialog.close());
  v.confirm.addEventListener('click', async () => {
    v.confirm.disabled = true;
    try {
      await api(path, { method: 'DELETE' });
      v.dialog.close();
      navigate('/');
    } catch (e) {
      setText(v.deleteError, e.message);
    } finally {
      v.confirm.disabled = false;
    }
  });
  for (const [key, btn] of [['1h', v.r1h], ['1d', v.r1d]]) {
    btn.addEventListener('click', () => {
      v.range = key;
      v.r1h.setAttribute('aria-pressed', String(key === '1h'));
      v.r1d.setAttribute('aria-pressed', String(key === '1d'));
      refreshCharts(v, path, v.signal);
    });
  }
}

async function saveSettings(v, path) {
  const val = (i) => (i.value.trim() === '' ? i.value : Number(i.value));
  for (const i of [v.min, v.max]) i.removeAttribute('aria-invalid');
  setText(v.settingsError, '');
  setText(v.settingsOK, '');
  v.save.disabled = true;
  try {
    const d = await api(path, { method: 'PUT', body: { settings: { min_instances: val(v.min), max_instances: val(v.max) } } });
    delete v.min.dataset.dirty;
    delete v.max.dataset.dirty;
    showDeployment(v, d, true);
    setText(v.settingsOK, `Saved: min ${d.settings.min_instances}, max ${d.settings.max_instances}.`);
  } catch (e) {
    setText(v.settingsError, e.message);
    const bad = { 'settings.min_instances': v.min, 'settings.max_instances': v.max }[e.param];
    if (bad) { bad.setAttribute('aria-invalid', 'true'); bad.focus(); }
  } finally {
    v.save.disabled = false;
  }
}
