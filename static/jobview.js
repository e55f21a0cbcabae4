// The job view: a dialog with one job's status, runtime, timings, limits, usage, compile
// step, output (live while it runs, from ``output`` events), its files, and Cancel / Run again.

import { highlightInto } from './highlight.js';
import { languageName, shortDigest } from './runtimes.js';
import {
  $, FINAL, describeError, el, formError, formatDuration, formatKib, formatLimits, formatTime,
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
    else if (fromDetail) this.job = { ...this.job, code: job.code, input: job.input, files: job.files };
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
    this.renderCompile(job.compile);
    this.renderStreams(job, final);
    this.renderSource(job);
  }

  renderMeta(job) {
    const usage = job.usage || {};
    const rows = [
      ['Status', job.status || 'Loading…'],
      ['Exit code', job.exit_code ?? '—'],
      ['Error reason', describeError(job.error)],
      ['Language', job.language && languageName(job.language)],
      ['Version', job.version],
      ['Image', imageText(job), job.image_digest],
      ['Backend', job.backend],
      ['User', job.uid],
      ['Submitted', formatTime(job.created_at)],
      ['Started', formatTime(job.started_at)],
      ['Finished', formatTime(job.finished_at)],
      ['Duration', formatDuration(job.duration_ms)],
      ['CPU time', usage.cpu_ms == null ? null : formatDuration(usage.cpu_ms)],
      ['Peak memory', usage.max_rss_kb == null ? null : formatKib(usage.max_rss_kb)],
      ['Limits', formatLimits(job.limits)],
      ['Files', job.files && job.files.length > 1 ? job.files.map((f) => f.name).join(', ') : null],
      ['Attempts', job.attempts > 1 ? job.attempts : null],
      ['Output', job.truncated ? 'Truncated (hit the output limit)' : null],
    ];
    const items = [];
    for (const [name, value, title] of rows) {
      if (value === null || value === undefined || value === '') continue;
      const dd = el('dd', { text: String(value), ...(title && { title }) });
      dd.dataset.field = name.toLowerCase().replace(/ /g, '-');
      const wide = ['Limits', 'Image', 'Files'].includes(name);
      items.push(el('div', wide ? { class: 'wide' } : {}, el('dt', { text: name }), dd));
    }
    $('jv-meta').replaceChildren(...items);
  }

  renderCompile(compile) {
    $('jv-compile').hidden = !compile;
    if (!compile) return;
    const outcome = compile.exit_code === 0 ? 'Compiled'
      : compile.exit_code === null ? 'Did not finish' : `Failed with exit code ${compile.exit_code}`;
    const took = `${compile.cached ? 'took' : 'in'} ${formatDuration(compile.duration_ms)}`;
    $('jv-compile-summary').textContent = compile.cached
      ? `${outcome} before (it ${took}); this run reused the result.` : `${outcome} ${took}.`;
    $('jv-compile-cached').hidden = !compile.cached;
    const out = $('jv-compile-out');
    out.textContent = compile.output || '(no messages)';
    out.classList.toggle('placeholder', !compile.output);
    out.classList.toggle('err', compile.exit_code !== 0 && Boolean(compile.output));
  }

  renderSource(job) {
    $('jv-source').hidden = job.code === undefined;
    const shown = this.shownSource;
    if (shown && ['job_id', 'code', 'files', 'input', 'language'].every((k) => shown[k] === job[k])) {
      return; // unchanged: no need to highlight it again
    }
    this.shownSource = job;
    const files = job.files && job.files.length ? job.files : [{ name: null, content: job.code ?? '' }];
    $('jv-source-summary').textContent = files.length > 1 ? 'Files and input' : 'Code and input';
    const items = files.map((file, i) => {
      const pre = el('pre', { class: 'out hl' });
      highlightInto(pre, file.content, job.language);
      const title = file.name ? `${file.name}${i === 0 && files.length > 1 ? ' (entry point)' : ''}`
        : 'Code';
      return [el('h3', { text: title, ...(file.name && { class: 'file-name' }) }), pre];
    });
    $('jv-files').replaceChildren(...items.flat());
    $('jv-input').textContent = job.input || '(no input)';
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

function imageText(job) {
  if (!job.image) return null;
  const digest = shortDigest(job.image_digest);
  return digest && digest !== job.image ? `${job.image} · ${digest}` : job.image;
}
