// login.js: the login form. The token is checked against the API (GET
// /deploy/list) before it is kept in sessionStorage.
import { api, setToken } from '../api.js';
import { el, setText } from '../dom.js';

// mount shows the form; opts.onLogin is called once a token is accepted,
// opts.message is shown as the reason for logging in again.
export function mount(root, { message = '', onLogin }) {
  const input = el('input', {
    id: 'login-token', name: 'token', type: 'password', autocomplete: 'current-password',
    required: true, spellcheck: 'false', 'aria-describedby': 'login-help login-error',
  });
  const error = el('p', { id: 'login-error', class: 'error', role: 'alert', text: message });
  const submit = el('button', { id: 'login-submit', type: 'submit', text: 'Log in' });
  const form = el('form', { id: 'login-form', class: 'panel login', novalidate: true },
    el('h1', { text: 'thaw console' }),
    el('label', { for: 'login-token', text: 'API token' }),
    input,
    el('p', { id: 'login-help', class: 'help', text: 'The token thaw printed when it started (thaw dev: in .thaw/dev-token), or the one your operator gave you. It is kept in this tab only (sessionStorage) and sent as a bearer token.' }),
    error,
    submit);
  let alive = true;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const tok = input.value.trim();
    if (!tok) {
      setText(error, 'Paste your API token.');
      input.focus();
      return;
    }
    submit.disabled = true;
    setText(error, '');
    try {
      await api('/deploy/list', { token: tok });
      if (!alive) return;
      setToken(tok);
      onLogin();
    } catch (err) {
      if (!alive) return;
      setText(error, err.status === 401 ? `That token was not accepted: ${err.message}` : err.message);
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  root.append(form);
  input.focus();
  return () => { alive = false; };
}
