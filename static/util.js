// Small helpers shared by the views: DOM lookups and formatting.

export const $ = (id) => document.getElementById(id);

export const FINAL = new Set(['DONE', 'ERROR', 'CANCELLED']);
const RANK = { WAITING: 0, RUNNING: 1, DONE: 2, ERROR: 2, CANCELLED: 2 };

/** True when ``next`` is at least as far along the status machine as ``prev``. */
export function isNewer(next, prev) {
  return !prev || RANK[next.status] >= RANK[prev.status];
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** Show ``message`` in the error box ``id``; a falsy message hides the box. */
export function formError(id, message) {
  const box = $(id);
  box.textContent = message || '';
  box.hidden = !message;
}

export function statusBadge(status) {
  return el('span', { class: `badge s-${String(status).toLowerCase()}`, text: status });
}

export function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  const today = new Date().toDateString() === date.toDateString();
  if (!today) Object.assign(opts, { month: 'short', day: 'numeric' });
  return date.toLocaleString(undefined, opts);
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** KiB as people read memory sizes: "812 KB", "23.4 MB". */
export function formatKib(kib) {
  if (kib < 1024) return `${kib} KB`;
  const mb = kib / 1024;
  return mb < 100 ? `${mb.toFixed(1)} MB` : `${Math.round(mb)} MB`;
}

export function formatLimits(limits) {
  if (!limits) return '—';
  const parts = [];
  if (limits.timeout_s !== undefined) parts.push(`${limits.timeout_s} s timeout`);
  if (limits.memory_mb !== undefined) parts.push(`${limits.memory_mb} MB memory`);
  if (limits.cpus !== undefined) parts.push(`${limits.cpus} CPU`);
  return parts.join(' · ');
}

const REASONS = {
  timeout: 'Timed out (the time limit was reached)',
  memory: 'Ran out of memory (the memory limit was reached)',
  output_limit: 'Wrote more output than allowed',
  cancelled: 'Cancelled',
  interrupted: 'Interrupted twice by a server restart',
  compile: 'Did not compile (see the compiler\'s messages)',
};

export function describeError(error) {
  if (!error) return null;
  return REASONS[error] || error;
}
