// Talking to the orq server: REST over fetch and live events over a WebSocket.
// Every URL is RELATIVE to the page (served at <prefix>/ui/), so the dashboard
// keeps working behind a reverse proxy that mounts orq under a path prefix.

const API_BASE = new URL('..', location.href);

/** An error the API (or the network) reported, with a sentence fit for people. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiUrl(path, query = {}) {
  const url = new URL(path, API_BASE);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  return url;
}

export class Api {
  constructor() {
    this.token = null;
    this.onUnauthorized = () => {};
  }

  async request(method, path, { body, query } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let resp;
    try {
      resp = await fetch(apiUrl(path, query), {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the orq server. Check your connection and try again.');
    }
    if (resp.status === 204) return { data: null, headers: resp.headers };
    const data = await resp.json().catch(() => null);
    if (!resp.ok) throw this.failure(resp, data);
    return { data, headers: resp.headers };
  }

  failure(resp, data) {
    const err = data && data.error;
    const message = err && err.message
      ? sentence(err.message)
      : `The server answered ${resp.status} ${resp.statusText || ''}`.trim() + '.';
    const retry = resp.headers.get('Retry-After');
    const error = new ApiError(resp.status, err ? err.code : 'http_' + resp.status,
      retry && !/try again/i.test(message) ? `${message} Try again in ${retry} s.` : message);
    if (resp.status === 401 && this.token) this.onUnauthorized(error);
    return error;
  }

  health() { return this.request('GET', 'healthz').then((r) => r.data); }
  register(uid, password) { return this.request('POST', 'users', { body: { uid, password } }); }
  login(uid, password) {
    return this.request('POST', 'auth/token', { body: { uid, password } }).then((r) => r.data);
  }
  logout() { return this.request('DELETE', 'auth/token'); }
  submit(job) { return this.request('POST', 'jobs', { body: job }).then((r) => r.data); }
  job(id) { return this.request('GET', `jobs/${id}`).then((r) => r.data); }
  cancel(id) { return this.request('DELETE', `jobs/${id}`).then((r) => r.data); }
  runtimes() { return this.request('GET', 'runtimes').then((r) => r.data); }
  images() { return this.request('GET', 'images').then((r) => r.data); }

  /** One page of jobs, newest first; ``more`` is true when the server has older ones. */
  async jobs({ status, uid, limit, before }) {
    const { data, headers } = await this.request('GET', 'jobs', { query: { status, uid, limit, before } });
    return { jobs: data, more: /rel="?next"?/.test(headers.get('Link') || '') };
  }
}

function sentence(text) {
  const s = String(text).trim();
  if (!s) return 'Something went wrong.';
  const first = s[0].toUpperCase() + s.slice(1);
  return /[.!?]$/.test(first) ? first : first + '.';
}

/**
 * The live event stream. Reconnects with a growing delay and asks the server to
 * replay what it missed (``?since=<last id>``); ``onState`` hears
 * 'connecting' | 'live' | 'reconnecting' and ``onReconnect`` fires after a gap.
 */
export class EventStream {
  constructor({ token, onEvent, onState, onReconnect, onLost = () => {} }) {
    Object.assign(this, { token, onEvent, onState, onReconnect, onLost });
    this.lastId = null;
    this.delay = 500;
    this.socket = null;
    this.closed = false;
    this.timer = null;
    this.everOpened = false;
  }

  url() {
    const url = new URL('ws', API_BASE);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) url.searchParams.set('token', this.token);
    if (this.lastId !== null) url.searchParams.set('since', this.lastId);
    return url;
  }

  open() {
    this.closed = false;
    this.onState(this.everOpened ? 'reconnecting' : 'connecting');
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener('message', (ev) => this.receive(ev.data));
    socket.addEventListener('close', () => this.lost(socket));
  }

  receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (msg.type === 'hello') {
      const again = this.everOpened;
      this.everOpened = true;
      this.delay = 500;
      if (this.lastId === null) this.lastId = msg.last_id;
      this.onState('live');
      if (again) this.onReconnect();
      return;
    }
    if (typeof msg.id === 'number') this.lastId = Math.max(this.lastId ?? 0, msg.id);
    this.onEvent(msg);
  }

  lost(socket) {
    if (socket !== this.socket || this.closed) return;
    this.onState('reconnecting', Math.round(this.delay / 1000));
    this.onLost();
    this.timer = setTimeout(() => this.open(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close();
    this.socket = null;
  }
}
