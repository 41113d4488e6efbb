// main.js: the console's entry point. It shows the login form whenever
// there is no token, the header when there is, and mounts the page the URL
// names. A page module exports mount(root, params) and may return a
// cleanup function, called when the user leaves the page (it stops the
// page's timers and streams).
import { api, token, clearToken, onUnauthorized } from './api.js';
import { el, setText, notFound } from './dom.js';
import { match, navigate, start } from './router.js';
import * as login from './pages/login.js';

// pages maps a route's page to its module, loaded when first shown.
const pages = {
  dashboard: './pages/dashboard.js',
  create: './pages/create.js',
  deployment: './pages/deployment.js',
  demo: './pages/demo.js',
  api: './pages/apipage.js',
  usage: './pages/usage.js',
};
const missing = { mount: (root) => { root.append(notFound('Page')); document.title = 'Not found · thaw'; } };

const main = document.getElementById('main');
const top = document.getElementById('top');
let cleanup = null;
let whoFor = '';
let shown = 0; // counts renders, so a slow module load cannot mount a page the user already left

function unmount() {
  if (cleanup) {
    try { cleanup(); } catch (e) { console.warn('cleanup', e); }
  }
  cleanup = null;
  main.replaceChildren();
}

// render shows the page for path (or the login form).
async function render(path, loginMessage = '') {
  const n = ++shown;
  unmount();
  if (!token()) {
    top.hidden = true;
    document.title = 'Log in · thaw';
    cleanup = login.mount(main, { message: loginMessage, onLogin: () => render(location.pathname) });
    return;
  }
  top.hidden = false;
  showWho();
  const { page, params } = match(path);
  markNav(page);
  let mod = missing;
  if (pages[page]) {
    try {
      mod = await import(pages[page]);
    } catch (e) {
      if (n === shown) main.append(el('p', { class: 'error', role: 'alert', text: `Cannot load this page: ${e.message}` }));
      return;
    }
  }
  if (n !== shown) return;
  cleanup = mod.mount(main, params) || null;
  main.focus({ preventScroll: true });
}

// showWho fills #whoami with the token's user (from GET /account; when this
// thaw has no ledger, from the first deployment's owner, else "signed in").
async function showWho() {
  const who = document.getElementById('whoami');
  if (whoFor === token()) return;
  whoFor = token();
  setText(who, 'signed in');
  try {
    const acct = await api('/account');
    setText(who, acct.owner);
    return;
  } catch { /* no ledger: try the deployments */ }
  try {
    const list = await api('/deploy/list');
    if (list.length) setText(who, list[0].full_name.split('/')[0]);
  } catch { /* keep "signed in" */ }
}

function markNav(page) {
  const current = { dashboard: 'nav-deployments', create: 'nav-new', usage: 'nav-usage' }[page];
  for (const id of ['nav-deployments', 'nav-new', 'nav-usage']) {
    const a = document.getElementById(id);
    if (id === current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

document.getElementById('logout').addEventListener('click', () => {
  clearToken();
  whoFor = '';
  setText(document.getElementById('whoami'), '');
  navigate('/', { replace: true });
});

onUnauthorized(() => {
  if (!token()) return;
  clearToken();
  whoFor = '';
  render(location.pathname, 'Your token was refused (401): log in again.');
});

start((path) => render(path));
