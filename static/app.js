// The orq dashboard: sign in, submit, the live jobs table and the job view.

import { Api, EventStream } from './api.js';
import { makeEditor } from './editor.js';
import { Highlighter } from './highlight.js';
import { JobsTable } from './jobs.js';
import { JobView } from './jobview.js';
import { RuntimeChoice } from './runtimes.js';
import { STARTERS } from './starters.js';
import { $, formError } from './util.js';

const SESSION_KEY = 'orq.session';
// answers that mean the server's images or runtimes changed since the form was filled
const CATALOGUE_ERRORS = new Set(['unknown_language', 'unknown_version', 'unknown_image',
  'runtime_not_in_image']);
const api = new Api();
// starter: the starter program last put in the editor (its code is untouched while equal);
// files: the other files of a multi-file job being run again (the editor holds the first)
const state = { mode: null, session: null, stream: null, starter: null, files: null };
const highlighter = new Highlighter($('code'), $('code-hl'));
const choice = new RuntimeChoice({ api, onLanguage: languageChanged });

const table = new JobsTable({
  api,
  onOpen: (id) => openJob(id),
  onError: (err) => toast(err.message),
});
const view = new JobView({
  api,
  onJob: (job) => table.apply(job),
  onRunAgain: (job) => prefill(job),
});

// -- messages ---------------------------------------------------------------------

function toast(message) {
  $('toast-text').textContent = message;
  $('toast').hidden = !message;
}

// -- session ------------------------------------------------------------------------

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    return saved && saved.mode === state.mode ? saved : null;
  } catch {
    return null;
  }
}

function saveSession(session) {
  state.session = session;
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
  api.token = session ? session.token : null;
}

async function boot() {
  try {
    const health = await api.health();
    state.mode = health.auth === 'open' ? 'open' : 'required';
  } catch (err) {
    $('booting').textContent = `${err.message} Retrying…`;
    setTimeout(boot, 3000);
    return;
  }
  $('booting').hidden = true;
  const session = loadSession();
  if (session) { saveSession(session); showDashboard(); } else showSignIn();
}

function showSignIn(message) {
  const open = state.mode === 'open';
  $('dashboard').hidden = true;
  $('whoami').hidden = true;
  $('conn').hidden = true;
  $('signin').hidden = false;
  $('password-row').hidden = open;
  $('register-button').hidden = open;
  $('signin-hint').textContent = open
    ? 'This server runs in open mode: enter the user id to act as, no password needed.'
    : 'Run short programs and watch them live. New here? Pick a numeric user id '
      + 'and a password, then press Create account.';
  formError('signin-error', message);
  $('uid').focus();
}

function readCredentials() {
  const uidText = $('uid').value.trim();
  if (!/^\d+$/.test(uidText)) throw new Error('Enter your User ID: a whole number like 42.');
  const password = $('password').value;
  if (state.mode !== 'open' && !password) throw new Error('Enter your password.');
  return { uid: Number(uidText), password };
}

async function signIn(register) {
  formError('signin-error', null);
  const buttons = [$('signin-button'), $('register-button')];
  try {
    const { uid, password } = readCredentials();
    buttons.forEach((b) => { b.disabled = true; });
    if (state.mode === 'open') {
      saveSession({ mode: 'open', uid, token: null, is_admin: false });
    } else {
      if (register) {
        if (password.length < 8) throw new Error('Choose a password of at least 8 characters.');
        await api.register(uid, password);
      }
      const auth = await api.login(uid, password);
      saveSession({ mode: 'required', uid: auth.uid, token: auth.token, is_admin: auth.is_admin });
    }
    $('password').value = '';
    showDashboard();
  } catch (err) {
    formError('signin-error', err.message);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function signOut(message) {
  const token = state.session && state.session.token;
  if (state.stream) state.stream.close();
  state.stream = null;
  view.close();
  table.clear();
  if (token && !message) await api.logout().catch(() => {});
  saveSession(null);
  toast(null);
  showSignIn(message);
}

api.onUnauthorized = () => signOut('Your session has ended. Please sign in again.');

// -- dashboard ------------------------------------------------------------------------

function showDashboard() {
  const { uid, is_admin: isAdmin } = state.session;
  $('signin').hidden = true;
  $('dashboard').hidden = false;
  $('whoami').hidden = false;
  $('whoami-text').textContent = `User ${uid}${isAdmin ? ' (admin)' : ''}`;
  table.setViewer(uid, state.mode === 'open' || isAdmin);
  connect();
  table.firstPage();
  choice.load();
  if (location.hash) route();
}

function connect() {
  if (state.stream) state.stream.close();
  state.stream = new EventStream({
    token: state.session.token,
    onEvent: onEvent,
    onState: showConnection,
    onReconnect: () => { table.reload(); choice.load(); if (view.jobId) view.open(view.jobId); },
    // a socket refused for an expired or revoked token looks like any lost connection:
    // one cheap REST call tells them apart (a 401 signs out)
    onLost: () => { if (state.session?.token) api.jobs({ limit: 1 }).catch(() => {}); },
  });
  state.stream.open();
}

function onEvent(msg) {
  if (msg.type === 'job' && msg.job) {
    table.apply(msg.job);
    view.update(msg.job);
  } else if (msg.type === 'output') {
    view.output(msg);
  } else if (msg.type === 'resync') {
    table.reload();
  }
}

function showConnection(status, seconds) {
  const conn = $('conn');
  conn.hidden = false;
  conn.dataset.state = status;
  conn.textContent = {
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: seconds ? `Connection lost. Reconnecting in ${seconds} s…`
      : 'Connection lost. Reconnecting…',
  }[status];
  conn.title = status === 'live' ? 'Receiving live updates from the server' : '';
}

// -- the editor: language, highlighting, starter programs, attached files -----------------

function setCode(text) {
  $('code').value = text;
  highlighter.render();
}

/** A new language: highlight it, and swap the starter program if the code is still one. */
function languageChanged(language) {
  highlighter.setLanguage(language);
  const code = $('code').value;
  if (!state.files && (!code.trim() || code === state.starter) && STARTERS[language]) {
    state.starter = STARTERS[language];
    setCode(state.starter);
  }
}

function attachFiles(files, jobId) {
  state.files = files && files.length > 1 ? { entry: files[0].name, rest: files.slice(1) } : null;
  $('code-files').hidden = !state.files;
  if (state.files) {
    $('code-files-text').textContent = `The editor holds ${state.files.entry}, the entry point; `
      + `${state.files.rest.map((f) => f.name).join(', ')} from job #${jobId} go along with it.`;
  }
}

/** The program's fields: ``code``, or ``files`` when a multi-file job is being run again. */
function program() {
  const code = $('code').value;
  if (!state.files) return { code };
  return { files: [{ name: state.files.entry, content: code }, ...state.files.rest] };
}

// -- submit -----------------------------------------------------------------------------

function numberField(id) {
  const input = $(id);
  if (input.value.trim() === '') {
    if (input.validity.badInput) throw new Error(`${input.labels[0].textContent} must be a number.`);
    return undefined;
  }
  return Number(input.value);
}

async function submit() {
  const run = $('run');
  if (run.disabled) return;
  formError('submit-error', null);
  try {
    const body = {
      uid: state.session.uid,
      ...program(),
      input: $('input').value,
      ...choice.body(),
      timeout: numberField('timeout'),
      memory_mb: numberField('memory'),
    };
    if (!$('code').value.trim()) throw new Error('Write some code to run first.');
    run.disabled = true;
    $('submit-note').textContent = 'Submitting…';
    const { job_id: jobId } = await api.submit(body);
    $('submit-note').textContent = `Job #${jobId} submitted.`;
    openJob(jobId);
  } catch (err) {
    $('submit-note').textContent = '';
    formError('submit-error', err.message);
    if (CATALOGUE_ERRORS.has(err.code)) choice.load(); // show what the server offers now
  } finally {
    run.disabled = false;
  }
}

function prefill(job) {
  state.starter = null;
  attachFiles(job.files, job.job_id);
  choice.set({ language: job.language || 'python', version: job.version, image: job.image });
  setCode(job.files && job.files.length ? job.files[0].content : job.code ?? '');
  $('input').value = job.input ?? '';
  const limits = job.limits || {};
  $('timeout').value = limits.timeout_s ?? '';
  $('memory').value = limits.memory_mb ?? '';
  const missing = choice.value.language !== (job.language || 'python');
  $('submit-note').textContent = `Form filled from job #${job.job_id}. Edit it or press Run.`
    + (missing ? ` This server no longer offers its language (${job.language}).` : '');
  formError('submit-error', null);
  $('code').focus();
  $('code').setSelectionRange(0, 0);
}

// -- routing: #job-<id> opens the job view ---------------------------------------------

function openJob(id) {
  if (location.hash !== `#job-${id}`) history.pushState(null, '', `#job-${id}`);
  view.open(id);
}

function route() {
  const match = /^#job-(\d+)$/.exec(location.hash);
  if (!state.session || $('dashboard').hidden) return;
  if (match) { if (Number(match[1]) !== view.jobId) view.open(Number(match[1])); } else view.close();
}

// -- wiring --------------------------------------------------------------------------------

$('signin-form').addEventListener('submit', (ev) => { ev.preventDefault(); signIn(false); });
$('register-button').addEventListener('click', () => signIn(true));
$('signout').addEventListener('click', () => signOut());
$('submit-form').addEventListener('submit', (ev) => { ev.preventDefault(); submit(); });
$('toast-close').addEventListener('click', () => toast(null));
window.addEventListener('hashchange', route);
window.addEventListener('popstate', route);
makeEditor($('code'), { onRun: submit });
$('code-files-drop').addEventListener('click', () => { attachFiles(null); $('code').focus(); });
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.session && !$('dashboard').hidden) choice.load();
});
languageChanged(choice.value.language);
$('input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); submit(); }
});
boot();
