// model.js: what the demo and API pages of /<owner>/<model> share: finding
// the caller's deployment of that name, or saying why there is none.
import { findModel } from '../api.js';
import { el, notFound } from '../dom.js';

// showModel finds owner/model's deployment and calls show with it. When
// the caller has none it appends the not-found state to root (as the API
// answers another user's model), and when the list cannot be read, the
// error. Nothing is shown once signal is aborted.
export async function showModel(root, owner, model, signal, show) {
  let d;
  try {
    d = await findModel(owner, model, signal);
  } catch (e) {
    if (!signal.aborted) root.append(el('p', { class: 'error', role: 'alert', text: e.message }));
    return;
  }
  if (signal.aborted) return;
  if (!d) {
    root.append(notFound(`Model ${owner}/${model}`));
    return;
  }
  show(d);
}
