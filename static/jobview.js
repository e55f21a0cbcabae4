// The job view: a dialog with one job's status, timings, limits, output (live
// while it runs, from ``output`` events), and Cancel / Run again.

import {
  $, FINAL, describeError, el, formError, formatDuration, formatLimits, formatTime, formatUsage,
  isNewer, statusBadge,
} from './util.js';

const MAX_LIVE = 2 * 1024 * 1024; // characters of live output kept per stream

export class JobView {
  constructor({ api, onJob, onRunAgain }) {
    Object.assign(this, { api, onJob, onRunAgain });
    this.dialog = $('job-view');
    this.job = null;
    this.live = new Map(); // job_id -> {stdout, stderr} seen over the WebSocket
    $('jv-close').addEventListener('click', () => this.dialog.close());
    $('jv-cancel').addEventListener('click', () => this.cancel());
    $('jv-again').addEventListener('click', () => this.runAgain());
    this.dialog.addEventListener('close', () => this.closed());
    // a click on the backdrop (outside the dialog box) closes it
    this.dialog.addEventListener('click', (ev) => { if (ev.target === this.dialog) this.dialog.close(); });
  }

  get jobId() { return this.job ? this.job.job_id : null; }

  async open(jobId) {
    this.job = { job_id: jobId, status: '', result: '', stderr: '' };
    formError('jv-error', null);
    this.render();
    if (!this.dialog.open) this.dialog.showModal();
    try {
      const job = await this.api.job(jobId);
      if (this.jobId !== jobId) return;
      this.merge(job, true);
      this.onJob(job);
    } catch (err) {
      if (this.jobId === jobId) formError('jv-error', `Could not load job #${jobId}: ${err.message}`);
    }
  }

  close() { if (this.dialog.open) this.dialog.close(); }

  closed() {
    this.job = null;
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  }

  /** A job event (or REST answer): refresh the view if it is this job. */
  update(job) {
    if (job.job_id === this.jobId) this.merge(job, false);
    if (FINAL.has(job.status)) this.live.delete(job.job_id);
  }

  merge(job, fromDetail) {
    const current = this.job.status ? this.job : null;
    if (isNewer(job, current)) this.job = { ...this.job, ...job };
    else if (fromDetail) this.job = { ...this.job, code: job.code, input: job.input };
    else return;
    this.render();
  }

  /** An output event: keep it, and show it when this job is open. */
  output(ev) {
    const buf = this.live.get(ev.job_id) || { stdout: '', stderr: '' };
    const stream = ev.stream === 'stderr' ? 'stderr' : 'stdout';
    buf[stream] = (buf[stream] + ev.data).slice(-MAX_LIVE);
    this.live.set(ev.job_id, buf);
    if (ev.job_id === this.jobId && !FINAL.has(this.job.status)) {
      const pre = $(stream === 'stdout' ? 'jv-stdout' : 'jv-stderr');
      const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.classList.remove('placeholder');
      pre.textContent = buf[stream];
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  }

  render() {
    const job = this.job;
    const final = FINAL.has(job.status);
    $('jv-title').textContent = `Job #${job.job_id}`;
    $('jv-status').replaceWith(Object.assign(statusBadge(job.status || '…'), { id: 'jv-status' }));
    $('jv-cancel').hidden = !job.status || final;
    $('jv-again').disabled = job.code === undefined;
    $('jv-stdout-live').hidden = job.status !== 'RUNNING';
    this.renderMeta(job);
    this.renderStreams(job, final);
    $('jv-source').hidden = job.code === undefined;
    $('jv-code').textContent = job.code ?? '';
    $('jv-input').textContent = job.input || '(no input)';
  }

  renderMeta(job) {
    const rows = [
      ['Status', job.status || 'Loading…'],
      ['Exit code', job.exit_code ?? '—'],
      ['Error reason', describeError(job.error)],
      ['Language', job.language],
      ['Backend', job.backend],
      ['User', job.uid],
      ['Submitted', formatTime(job.created_at)],
      ['Started', formatTime(job.started_at)],
      ['Finished', formatTime(job.finished_at)],
      ['Duration', formatDuration(job.duration_ms)],
      ['Limits', formatLimits(job.limits)],
      ['Usage', formatUsage(job.usage)],
      ['Attempts', job.attempts > 1 ? job.attempts : null],
      ['Output', job.truncated ? 'Truncated (hit the output limit)' : null],
    ];
    const items = [];
    for (const [name, value] of rows) {
      if (value === null || value === undefined || value === '') continue;
      const dd = el('dd', { text: String(value) });
      dd.dataset.field = name.toLowerCase().replace(/ /g, '-');
      items.push(el('div', name === 'Limits' ? { class: 'wide' } : {}, el('dt', { text: name }), dd));
    }
    $('jv-meta').replaceChildren(...items);
  }

  renderStreams(job, final) {
    const buf = this.live.get(job.job_id);
    for (const stream of ['stdout', 'stderr']) {
      const pre = $(stream === 'stdout' ? 'jv-stdout' : 'jv-stderr');
      const stored = (stream === 'stdout' ? job.result : job.stderr) || '';
      const text = !final && buf && buf[stream].length > stored.length ? buf[stream] : stored;
      let placeholder = '';
      if (!text) {
        if (!job.status) placeholder = 'Loading…';
        else if (job.status === 'WAITING') placeholder = 'Waiting to start…';
        else if (job.status === 'RUNNING') placeholder = 'Waiting for output…';
        else placeholder = '(empty)';
      }
      pre.classList.toggle('placeholder', Boolean(placeholder));
      pre.textContent = text || placeholder;
    }
  }

  async cancel() {
    const id = this.jobId;
    const button = $('jv-cancel');
    button.disabled = true;
    try {
      const job = await this.api.cancel(id);
      this.onJob(job);
      this.update(job);
    } catch (err) {
      if (this.jobId === id) formError('jv-error', `Could not cancel job #${id}: ${err.message}`);
      if (err.status === 409) this.api.job(id).then((job) => { this.onJob(job); this.update(job); })
        .catch(() => {});
    } finally {
      button.disabled = false;
    }
  }

  runAgain() {
    const job = this.job;
    this.dialog.close();
    this.onRunAgain(job);
  }
}
