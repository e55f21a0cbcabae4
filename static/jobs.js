// The jobs table: one page of jobs (newest first), status filter, pagination by
// ?before=<job_id>, and live updates applied in place as events arrive.

import { $, el, formatDuration, formatTime, isNewer, statusBadge } from './util.js';

const PAGE_SIZE = 25;
const LABELS = { WAITING: 'waiting', RUNNING: 'running', DONE: 'done', ERROR: 'failed', CANCELLED: 'cancelled' };

export class JobsTable {
  constructor({ api, onOpen, onError }) {
    Object.assign(this, { api, onOpen, onError });
    this.status = '';
    this.scope = 'mine';
    this.uid = null;
    this.cursors = []; // the ``before`` of every page before this one; [] = the newest page
    this.rows = [];
    this.trs = new Map();
    this.more = false;
    this.fresh = 0; // jobs that arrived while an older page is shown
    this.loading = null;
    this.pending = [];
    this.seq = 0;
    this.bind();
  }

  bind() {
    document.querySelectorAll('input[name="status"]').forEach((radio) => {
      radio.addEventListener('change', () => { this.status = radio.value; this.firstPage(); });
    });
    $('scope').addEventListener('change', (ev) => { this.scope = ev.target.value; this.firstPage(); });
    $('page-older').addEventListener('click', () => this.older());
    $('page-newer').addEventListener('click', () => this.newer());
    $('jobs-newest').addEventListener('click', () => this.firstPage());
    $('jobs-body').addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-job-id]');
      if (tr && !ev.target.closest('a')) this.onOpen(Number(tr.dataset.jobId));
    });
  }

  /** Who is looking: a uid and whether they may see everybody's jobs. */
  setViewer(uid, canSeeAll) {
    this.uid = uid;
    $('scope-wrap').hidden = !canSeeAll;
    this.scope = canSeeAll ? $('scope').value : 'mine'; // shown by the reload that follows
  }

  get before() { return this.cursors.length ? this.cursors[this.cursors.length - 1] : null; }

  firstPage() { this.cursors = []; return this.reload(); }

  older() {
    if (!this.more || !this.rows.length) return;
    this.cursors.push(this.rows[this.rows.length - 1].job_id);
    this.reload();
  }

  newer() { this.cursors.pop(); this.reload(); }

  async reload() {
    const seq = ++this.seq;
    this.pending = [];
    this.loading = seq;
    $('jobs-table').classList.toggle('show-uid', this.scope === 'all');
    $('jobs-table').setAttribute('aria-busy', 'true');
    try {
      const { jobs, more } = await this.api.jobs({
        status: this.status, limit: PAGE_SIZE, before: this.before,
        uid: this.scope === 'mine' ? this.uid : null,
      });
      if (seq !== this.seq) return;
      this.rows = jobs;
      this.more = more;
      this.fresh = 0;
      this.error = null;
    } catch (err) {
      if (seq !== this.seq) return;
      this.rows = [];
      this.error = err.message;
      this.onError(err);
    } finally {
      if (seq === this.seq) {
        this.loading = null;
        $('jobs-table').removeAttribute('aria-busy');
      }
    }
    const queued = this.pending;
    this.pending = [];
    queued.forEach((job) => this.apply(job, false));
    this.render();
  }

  matches(job) {
    return (!this.status || job.status === this.status)
      && (this.scope === 'all' || job.uid === this.uid);
  }

  /** A job changed (from the WebSocket or a REST answer): update the page in place. */
  apply(job, render = true) {
    if (this.loading) { this.pending.push(job); return; }
    const i = this.rows.findIndex((r) => r.job_id === job.job_id);
    if (i < 0 && !this.matches(job)) return; // neither on this page nor for it
    if (i >= 0 && !isNewer(job, this.rows[i])) return;
    if (!this.matches(job)) {
      this.rows.splice(i, 1); // it left the filtered set
    } else if (i >= 0) {
      this.rows[i] = { ...this.rows[i], ...job };
    } else {
      this.insert(job);
    }
    if (render) this.render();
  }

  insert(job) {
    const last = this.rows[this.rows.length - 1];
    if (this.cursors.length) {
      if (!this.rows.length || job.job_id > this.rows[0].job_id) this.fresh += 1;
      return;
    }
    if (this.rows.length >= PAGE_SIZE && last && job.job_id < last.job_id) return;
    this.rows.push(job);
    this.rows.sort((a, b) => b.job_id - a.job_id);
    if (this.rows.length > PAGE_SIZE) {
      this.rows.length = PAGE_SIZE;
      this.more = true;
    }
  }

  render() {
    const body = $('jobs-body');
    const keep = new Set();
    this.rows.forEach((job, index) => {
      const tr = this.row(job);
      keep.add(job.job_id);
      if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
    });
    for (const [id, tr] of this.trs) {
      if (!keep.has(id)) { tr.remove(); this.trs.delete(id); }
    }
    this.renderChrome();
  }

  row(job) {
    let tr = this.trs.get(job.job_id);
    if (!tr) {
      tr = el('tr', { 'data-job-id': job.job_id });
      const link = el('a', { href: `#job-${job.job_id}`, text: `#${job.job_id}` });
      tr.append(el('td', { class: 'id' }, link));
      for (const cls of ['status', 'col-uid', 'col-lang', 'col-backend', 'num exit', 'num col-dur',
        'col-time']) {
        tr.append(el('td', { class: cls }));
      }
      this.trs.set(job.job_id, tr);
    } else if (tr.dataset.status !== job.status) {
      tr.classList.remove('changed');
      void tr.offsetWidth; // restart the highlight animation
      tr.classList.add('changed');
    }
    this.fill(tr, job);
    return tr;
  }

  fill(tr, job) {
    tr.dataset.status = job.status;
    const cells = tr.children;
    cells[1].replaceChildren(statusBadge(job.status));
    cells[2].textContent = job.uid;
    const elsewhere = job.image && job.image !== 'host';
    cells[3].textContent = elsewhere ? `${job.language}@${job.image}` : job.language || 'python';
    cells[3].title = [job.language, job.version, job.image && `in ${job.image}`].filter(Boolean)
      .join(' ');
    cells[4].textContent = job.backend || 'local';
    cells[5].textContent = job.exit_code ?? (job.error ? '—' : '');
    cells[6].textContent = job.duration_ms == null ? '' : formatDuration(job.duration_ms);
    cells[7].textContent = formatTime(job.created_at);
    cells[7].title = job.created_at || '';
  }

  renderChrome() {
    const empty = $('jobs-empty');
    empty.hidden = this.rows.length > 0;
    empty.classList.toggle('is-error', Boolean(this.error));
    if (this.error) empty.textContent = `Could not load jobs: ${this.error}`;
    else if (this.cursors.length) empty.textContent = 'No older jobs.';
    else if (this.status) empty.textContent = `No ${LABELS[this.status]} jobs.`;
    else empty.textContent = 'No jobs yet. Write some code and press Run.';
    const page = this.cursors.length + 1;
    $('page-newer').disabled = page === 1;
    $('page-older').disabled = !this.more;
    $('page-info').textContent = this.rows.length ? `Page ${page}` : '';
    document.querySelector('.pager').hidden = page === 1 && !this.more;
    const news = $('jobs-news');
    news.hidden = this.fresh === 0;
    $('jobs-newest').textContent = this.fresh === 1
      ? '1 new job — show newest' : `${this.fresh} new jobs — show newest`;
  }

  clear() {
    this.rows = [];
    this.cursors = [];
    this.render();
  }
}
