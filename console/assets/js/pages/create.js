// create.js: the form for POST /deploy/llm, every field of it. The API
// validates: its 4xx message is shown under the field its param names.
import { api, ApiError } from '../api.js';
import { el, setText, usd } from '../dom.js';
import { navigate } from '../router.js';

// FALLBACK_GPUS are offered when this thaw cannot list its GPUs (GET /gpus
// missing): the types of the meter's built-in price table.
const FALLBACK_GPUS = ['A100-80GB', 'H100-80GB', 'H200-141GB', 'B200-180GB', 'L4-24GB', 'L40S-48GB'];

// field is a labelled input with its .field-error slot.
function field(name, label, input, help) {
  const id = 'f-' + name.replace(/\./g, '-');
  input.id = id;
  input.name = name;
  input.setAttribute('aria-describedby', `${id}-err` + (help ? ` ${id}-help` : ''));
  return el('div', { class: 'field' },
    el('label', { for: id, text: label }),
    input,
    help ? el('p', { class: 'help', id: `${id}-help`, text: help }) : null,
    el('span', { class: 'field-error', id: `${id}-err`, 'data-for': name, 'aria-live': 'polite' }));
}

function numberInput(value, attrs = {}) {
  return el('input', { type: 'number', inputmode: 'numeric', step: '1', value, ...attrs });
}

export function mount(root) {
  document.title = 'New deployment · thaw';
  const gpu = el('select', {}, el('option', { value: '', text: 'loading GPU types…' }));
  const gpuNote = el('p', { class: 'help' });
  const submit = el('button', { id: 'create-submit', type: 'submit', text: 'Create deployment' });
  const formError = el('p', { id: 'form-error', class: 'error', role: 'alert' });
  const form = el('form', { id: 'create-form', class: 'panel', novalidate: true },
    el('fieldset', {}, el('legend', { text: 'Model' }),
      el('div', { class: 'fields' },
        field('model_name', 'Model name', el('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' }),
          'Called as <you>/<model name>; unique among your deployments.'),
        field('hf.repo', 'Hugging Face repo', el('input', { type: 'text', required: true, placeholder: 'meta-llama/Llama-2-7b-chat-hf', spellcheck: 'false' })),
        field('hf.revision', 'Revision (optional)', el('input', { type: 'text', placeholder: 'main', spellcheck: 'false' }),
          'A branch, tag or commit.'),
        field('hf.token', 'Hugging Face token (optional)', el('input', { type: 'password', autocomplete: 'new-password' }),
          'For private weights. Stored for the runtime, never shown again.'))),
    el('fieldset', {}, el('legend', { text: 'Hardware' }),
      el('div', { class: 'fields' },
        el('div', {}, field('gpu', 'GPU type', gpu), gpuNote),
        field('num_gpus', 'GPUs per instance', numberInput('1')),
        field('max_batch_size', 'Max batch size (optional)', numberInput(''), 'Requests an instance serves at once; thaw picks one when empty.'),
        field('extra_args', 'Extra model-server args (optional)', el('input', { type: 'text', placeholder: '--dtype half', spellcheck: 'false' })))),
    el('fieldset', {}, el('legend', { text: 'Scaling' }),
      el('div', { class: 'fields' },
        field('settings.min_instances', 'Min instances', numberInput('0'), '0 scales to zero when idle: no GPU held, the first request wakes it.'),
        field('settings.max_instances', 'Max instances', numberInput('1')))),
    formError,
    el('div', { class: 'actions' }, submit, el('a', { class: 'button secondary', href: '/', text: 'Cancel' })));
  root.append(el('section', { class: 'page' }, el('div', { class: 'page-head' }, el('h1', { text: 'New deployment' })), form));

  let alive = true;
  loadGPUs(gpu, gpuNote, () => alive);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form, formError);
    submit.disabled = true;
    try {
      const d = await api('/deploy/llm', { method: 'POST', body: body(form) });
      if (alive) navigate('/console/deployments/' + encodeURIComponent(d.deploy_id));
    } catch (err) {
      if (alive) showError(form, formError, err);
    } finally {
      submit.disabled = false;
    }
  });
  form.querySelector('[name="model_name"]').focus();
  return () => { alive = false; };
}

async function loadGPUs(select, note, alive) {
  let gpus;
  try {
    gpus = (await api('/gpus')).gpus || [];
  } catch (e) {
    if (!alive()) return;
    gpus = FALLBACK_GPUS.map((g) => ({ gpu: g }));
    setText(note, `This thaw did not list its GPU types (${e.message}); the usual ones are offered.`);
  }
  if (!alive()) return;
  select.replaceChildren(...gpus.map((g) => {
    const parts = [g.gpu];
    if (typeof g.total === 'number' && typeof g.free === 'number') parts.push(`${g.free} of ${g.total} free`);
    if (g.price_per_gpu_hour_usd !== undefined) parts.push(g.price_per_gpu_hour_usd === null ? 'no price' : `${usd(g.price_per_gpu_hour_usd)}/GPU-hour`);
    return el('option', { value: g.gpu, text: parts.join(' · ') });
  }));
  if (!gpus.length) select.append(el('option', { value: '', text: 'no GPU types offered' }));
}

// body builds the request from the form: empty optional fields are left
// out (the API's defaults apply); numbers go as numbers when they parse,
// as typed otherwise, so the API's message names the problem.
export function body(form) {
  const v = (name) => form.querySelector(`[name="${name}"]`).value.trim();
  const n = (name) => {
    const s = v(name);
    if (s === '') return undefined;
    const x = Number(s);
    return Number.isFinite(x) ? x : s;
  };
  const out = { model_name: v('model_name'), gpu: v('gpu') };
  const set = (obj, k, val) => { if (val !== undefined && val !== '') obj[k] = val; };
  set(out, 'num_gpus', n('num_gpus'));
  set(out, 'max_batch_size', n('max_batch_size'));
  out.hf = { repo: v('hf.repo') };
  set(out.hf, 'revision', v('hf.revision'));
  set(out.hf, 'token', form.querySelector('[name="hf.token"]').value);
  out.settings = {};
  set(out.settings, 'min_instances', n('settings.min_instances'));
  set(out.settings, 'max_instances', n('settings.max_instances'));
  set(out, 'extra_args', v('extra_args'));
  return out;
}

function clearErrors(form, formError) {
  form.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
  form.querySelectorAll('.field-error').forEach((s) => setText(s, ''));
  setText(formError, '');
}

// showError puts err under the field its param names (settings.max_instances,
// hf.repo, ...), or in #form-error.
function showError(form, formError, err) {
  const param = err instanceof ApiError ? err.param : '';
  const input = param ? form.querySelector(`[name="${CSS.escape(param)}"]`) : null;
  if (!input) {
    setText(formError, err.message);
    return;
  }
  input.setAttribute('aria-invalid', 'true');
  setText(form.querySelector(`.field-error[data-for="${CSS.escape(param)}"]`), err.message);
  input.focus();
}
