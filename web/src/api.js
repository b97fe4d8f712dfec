// The dashboard's HTTP client. The session JWT lives in an httpOnly cookie
// this code cannot read; unsafe requests echo the readable CSRF cookie in
// X-CSRF-Token (double submit), which the server checks.

const TEAM_KEY = 'hearth.team';

export class ApiError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)hearth_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

export function selectedTeam() {
  return localStorage.getItem(TEAM_KEY) || '';
}

// currentTeam is the team requests act for: the selected one, else the
// one the server picks without X-Team-ID (the first team the user owns,
// else their first).
export function currentTeam(me) {
  const t = selectedTeam();
  return (
    (t && me.teams.find((x) => x.id === t)) || me.teams.find((x) => x.role === 'owner') || me.teams[0]
  );
}

export function selectTeam(id) {
  if (id) localStorage.setItem(TEAM_KEY, id);
  else localStorage.removeItem(TEAM_KEY);
}

// Listeners told when the server says the session is gone (401).
const unauthorizedListeners = new Set();
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
  return () => unauthorizedListeners.delete(fn);
}

async function errorFrom(res) {
  let msg = '';
  try {
    const body = await res.json();
    msg = body.message || '';
  } catch {
    // not JSON
  }
  if (!msg) {
    msg = res.status === 404 ? 'Not found' : `${res.status} ${res.statusText}`.trim();
  }
  return new ApiError(res.status, msg);
}

// request sends method+path. body: undefined, a plain object (sent as JSON)
// or a Blob/File (sent raw). Returns parsed JSON, null for 204, or the
// Response when opts.raw.
export async function request(method, path, body, opts = {}) {
  const headers = {};
  let payload;
  if (body instanceof Blob) {
    payload = body;
    headers['Content-Type'] = 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken();
  const team = selectedTeam();
  if (team && path.startsWith('/v1/')) headers['X-Team-ID'] = team;
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError(0, `Network error: ${e.message}`);
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && !opts.quiet401) unauthorizedListeners.forEach((fn) => fn());
    throw err;
  }
  if (opts.raw) return res;
  if (res.status === 204) return null;
  const ct = res.headers.get('Content-Type') || '';
  return ct.includes('json') ? res.json() : res.text();
}

export const api = {
  get: (p, o) => request('GET', p, undefined, o),
  post: (p, b, o) => request('POST', p, b ?? {}, o),
  put: (p, b, o) => request('PUT', p, b, o),
  patch: (p, b, o) => request('PATCH', p, b ?? {}, o),
  del: (p, o) => request('DELETE', p, undefined, o),
};

export function teamQuery() {
  const t = selectedTeam();
  return t ? `&team=${encodeURIComponent(t)}` : '';
}

export function fileURL(sandboxId, path) {
  return `/v1/sandboxes/${encodeURIComponent(sandboxId)}/files?path=${encodeURIComponent(path)}`;
}
