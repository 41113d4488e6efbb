// router.js: client-side navigation with the history API. Links to the
// console's own pages are followed without a reload; the server answers
// every console URL with the same index.html, so reloads and shared links
// land on the same page.

let onRoute = () => {};

// routes are tried in order; a pattern's groups become the page's params.
const routes = [
  { re: /^\/(?:console\/?)?$/, page: 'dashboard', keys: [] },
  { re: /^\/console\/new\/?$/, page: 'create', keys: [] },
  { re: /^\/console\/usage\/?$/, page: 'usage', keys: [] },
  { re: /^\/console\/deployments\/([^/]+)\/?$/, page: 'deployment', keys: ['id'] },
  { re: /^\/console\//, page: 'missing', keys: [] },
  { re: /^\/([^/]+)\/([^/]+)\/api\/?$/, page: 'api', keys: ['owner', 'model'] },
  { re: /^\/([^/]+)\/([^/]+)\/?$/, page: 'demo', keys: ['owner', 'model'] },
];

// match returns {page, params} for a path; unknown paths are 'missing'.
export function match(path) {
  for (const r of routes) {
    const m = r.re.exec(path);
    if (!m) continue;
    const params = {};
    r.keys.forEach((k, i) => {
      try { params[k] = decodeURIComponent(m[i + 1]); } catch { params[k] = m[i + 1]; }
    });
    return { page: r.page, params };
  }
  return { page: 'missing', params: {} };
}

// navigate shows path, adding it to the history (or replacing the current
// entry).
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else if (path !== location.pathname + location.search) history.pushState(null, '', path);
  onRoute(location.pathname);
}

// start calls fn(pathname) now and on every navigation: back/forward, and
// clicks on same-origin links (plain left clicks; a modified click or a
// download keeps the browser's behaviour).
export function start(fn) {
  onRoute = fn;
  window.addEventListener('popstate', () => onRoute(location.pathname));
  document.addEventListener('click', (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = e.target.closest && e.target.closest('a[href]');
    if (!a || a.target || a.hasAttribute('download')) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith('/console/assets/')) return;
    if (url.pathname === location.pathname && url.hash) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
  onRoute(location.pathname);
}
