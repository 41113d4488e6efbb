// api.js: calls to thaw's API with the user's token. The token lives in
// sessionStorage only (key thaw.token): never in a URL or a cookie.

const KEY = 'thaw.token';

// token returns the stored token, or "".
export function token() {
  try { return sessionStorage.getItem(KEY) || ''; } catch { return ''; }
}

// setToken stores the token for this tab's session.
export function setToken(t) { sessionStorage.setItem(KEY, t); }

// clearToken forgets the token (logout).
export function clearToken() { sessionStorage.removeItem(KEY); }

// ApiError is an API error in OpenAI's shape {"error": {message, type,
// param, code}}, or a network failure (status 0).
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || (status ? `HTTP ${status}` : 'network error'));
    this.status = status;
    this.type = e.type || '';
    this.param = e.param || '';
    this.code = e.code || '';
  }
}

// listeners for an unauthorized answer: the token was revoked or mistyped.
const unauthorized = new Set();

// onUnauthorized registers fn, called on any 401 of an authenticated call.
export function onUnauthorized(fn) { unauthorized.add(fn); }

// raw sends a request with the token and returns the Response, throwing an
// ApiError for a non-2xx answer. opts: method, body (JSON-encoded unless a
// string), accept, signal, token (instead of the stored one), headers.
export async function raw(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const tok = opts.token !== undefined ? opts.token : token();
  if (tok) headers.set('Authorization', 'Bearer ' + tok);
  headers.set('Accept', opts.accept || 'application/json');
  let body = opts.body;
  if (body !== undefined && typeof body !== 'string') {
    body = JSON.stringify(body);
    headers.set('Content-Type', 'application/json');
  }
  let res;
  try {
    res = await fetch(path, { method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store' });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, { error: { message: 'cannot reach thaw: ' + (err && err.message || err) } });
  }
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    const e = new ApiError(res.status, data);
    if (res.status === 401 && opts.token === undefined) unauthorized.forEach((fn) => fn(e));
    throw e;
  }
  return res;
}

// api sends a request and decodes the JSON answer (null for an empty one).
export async function api(path, opts = {}) {
  const res = await raw(path, opts);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// q builds a query string from an object, skipping empty values.
export function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') s.set(k, String(v));
  }
  const out = s.toString();
  return out ? '?' + out : '';
}

// isMissing reports whether err means "no such thing here": a 404, which
// is also what an endpoint this thaw does not serve answers.
export function isMissing(err) { return err instanceof ApiError && err.status === 404; }

// weekStart is Monday 00:00 UTC of the week containing d, as thaw's
// statements count weeks.
export function weekStart(d = new Date()) {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const dow = (t.getUTCDay() + 6) % 7; // Monday = 0
  t.setUTCDate(t.getUTCDate() - dow);
  return t;
}

// rfc3339 formats a Date as RFC 3339 UTC without fractions.
export function rfc3339(d) { return d.toISOString().replace(/\.\d{3}Z$/, 'Z'); }

// findModel returns the caller's deployment called owner/model (names are
// unique per user regardless of case), or null: another user's model is
// not found, as the API says of it.
export async function findModel(owner, model, signal) {
  const want = `${owner}/${model}`.toLowerCase();
  const list = await api('/deploy/list', { signal });
  return list.find((d) => d.full_name.toLowerCase() === want) || null;
}
