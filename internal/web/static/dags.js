// The jobs page: one card per DAG with its schedule, next run, tasks and
// latest runs (coloured squares, newest on the right), and a form to trigger
// a run. The list comes from /api/dags; "dagrun" events of /api/stream
// update the squares as runs start and finish.

// The shared helpers are loaded with this module's own ?v= query so that a
// new release never mixes old and new modules.
const { fetchJSON, openStream, showError, el, isNum, fmtDuration, RUN_STATES, wallClock, fmtLogical } = await import(`./common.js${new URL(import.meta.url).search}`);

const MAX_RUNS = 25; // as many as /api/dags sends per DAG
const TOKEN_KEY = 'stockpipe.token';

const $ = (id) => document.getElementById(id);
const listEl = $('dag-list');

/** DAG name → its card (see makeCard). */
const views = new Map();

// Read-only hooks for browser tests.
window.stockpipe = {
  loaded: false,
  runs(dag) {
    const v = views.get(dag);
    return v ? v.runsList.querySelectorAll('a[data-state]').length : 0;
  },
};

// ---- formatting ----------------------------------------------------------------

/** How far ahead a moment is: "in 5 min", "in 2 h 10 min", "due now". */
function fmtUntil(ms) {
  if (!isNum(ms)) return '';
  if (ms < 30000) return 'due now';
  const min = Math.round(ms / 60000);
  if (min < 60) return `in ${min} min`;
  if (min < 1440) return `in ${Math.floor(min / 60)} h ${min % 60} min`;
  return `in ${Math.floor(min / 1440)} d ${Math.floor((min % 1440) / 60)} h`;
}

/** Today's date in time zone tz as YYYY-MM-DD. */
function todayIn(tz) {
  const p = wallClock(new Date(), tz);
  return `${p.year}-${p.month}-${p.day}`;
}

const localFmt = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false, timeZoneName: 'short',
});
const utcFmt = new Intl.DateTimeFormat(undefined, {
  timeZone: 'UTC', weekday: 'short', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false, timeZoneName: 'short',
});

/** How long a run took, or has been going; null before it starts. */
function runDuration(run, now = Date.now()) {
  if (!run.started) return null;
  const start = Date.parse(run.started);
  const end = run.finished ? Date.parse(run.finished) : now;
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, end - start) : null;
}

function runState(run) {
  return RUN_STATES.has(run.state) ? run.state : 'queued';
}

// ---- cron in words ------------------------------------------------------------------

const DAY_NAMES = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
const pad2 = (n) => String(n).padStart(2, '0');
const isInt = (s) => /^\d+$/.test(s);

function describeDays(dow) {
  if (dow === '*') return 'every day';
  const m = /^(\d)-(\d)$/.exec(dow);
  if (m && DAY_NAMES[m[1]] && DAY_NAMES[m[2]]) return `${DAY_NAMES[m[1]]} to ${DAY_NAMES[m[2]]}`;
  if (/^\d(,\d)*$/.test(dow)) {
    const names = dow.split(',').map((d) => DAY_NAMES[d]);
    if (names.some((n) => !n)) return '';
    if (names.length === 1) return `on ${names[0]}s`;
    return `on ${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  }
  return '';
}

/**
 * The common five-field cron expressions in words ("at 16:30, Monday to
 * Friday"); '' for anything less common, which is then shown as written.
 */
function describeCron(expr) {
  const f = String(expr || '').trim().split(/\s+/);
  if (f.length !== 5) return '';
  const [min, hour, dom, mon, dow] = f;
  if (mon !== '*') return '';
  let days = '';
  if (dom === '*') days = describeDays(dow);
  else if (isInt(dom) && dow === '*') days = `on day ${dom} of the month`;
  if (!days) return '';
  let when = '';
  if (isInt(min) && isInt(hour)) when = `at ${pad2(hour)}:${pad2(min)}`;
  else if (isInt(min) && hour === '*') when = `every hour at :${pad2(min)}`;
  else if (/^\*\/\d+$/.test(min) && hour === '*') when = `every ${min.slice(2)} minutes`;
  else if (min === '*' && hour === '*') when = 'every minute';
  if (!when) return '';
  return `${when}, ${days}`;
}

// ---- the access token -----------------------------------------------------------------

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage may be disabled; the token is then asked for each time.
  }
}

/**
 * POSTs body as JSON to url and returns the parsed answer. A non-2xx answer
 * throws an Error carrying .status and the server's {"error": "..."} text.
 */
async function postJSON(url, body, token) {
  const headers = { Accept: 'application/json', 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin' });
  } catch (err) {
    const e = new Error(`network error: ${err.message}`);
    e.status = 0;
    throw e;
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = new Error(data && typeof data.error === 'string' && data.error ? data.error : `${res.status} ${res.statusText}`.trim());
    e.status = res.status;
    throw e;
  }
  return data;
}

/** Reads "key=value" lines; blank lines and lines starting with # are skipped. */
function parseParams(text) {
  const params = {};
  let n = 0;
  const lines = String(text || '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`Line ${i + 1}: “${line}” is not key=value.`);
    const key = line.slice(0, eq).trim();
    if (!key) throw new Error(`Line ${i + 1}: the name before “=” is missing.`);
    if (/\s/.test(key)) throw new Error(`Line ${i + 1}: the name “${key}” contains a space.`);
    if (Object.hasOwn(params, key)) throw new Error(`Line ${i + 1}: “${key}” is given twice.`);
    params[key] = line.slice(eq + 1).trim();
    n++;
  }
  return n ? params : null;
}

// ---- the cards -----------------------------------------------------------------------

let cardSeq = 0;

function fact(label, dd) {
  return el('div', {}, el('dt', {}, label), dd);
}

function field(id, label, control, hint, optional = false) {
  const hintId = `${id}-hint`;
  if (hint) control.setAttribute('aria-describedby', hintId);
  return el('div', { className: 'field' },
    el('label', { htmlFor: id }, label, optional ? el('span', { className: 'optional' }, ' (optional)') : null),
    control,
    hint ? el('p', { id: hintId, className: 'hint' }, hint) : null);
}

function makeCard(dag) {
  const n = ++cardSeq;
  const headId = `dag-h-${n}`;
  const formId = `trig-${n}`;
  const v = { name: dag.name, dag, nodes: new Map() };

  v.trigger = el('button', { type: 'button', className: 'trigger', 'aria-expanded': 'false', 'aria-controls': formId },
    'Trigger', el('span', { className: 'visually-hidden' }, ` ${dag.name}`), '…');
  v.desc = el('p', { className: 'dag-desc' });
  v.schedule = el('dd', { className: 'schedule' });
  v.next = el('dd', { className: 'next-run' });
  v.tasks = el('dd', { className: 'tasks' });
  v.paramsCount = el('summary', {});
  v.paramsRows = el('tbody');
  v.params = el('details', { className: 'dag-params' }, v.paramsCount,
    el('div', { className: 'table-scroll' },
      el('table', { className: 'pl-table params-table' },
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Name'), el('th', { scope: 'col' }, 'Value'))),
        v.paramsRows)));
  v.runsList = el('ol', { className: 'runs', 'aria-label': `Latest runs of ${dag.name}, oldest first` });
  v.noRuns = el('p', { className: 'muted small no-runs' }, 'No runs yet.');
  v.lastRun = el('p', { className: 'last-run small' });
  v.status = el('p', { className: 'trigger-status', role: 'status' });

  // The trigger form.
  v.date = el('input', { type: 'date', name: 'date', id: `${formId}-date`, required: true });
  v.paramsInput = el('textarea', {
    name: 'params', id: `${formId}-params`, rows: 3, spellcheck: false, autocapitalize: 'off', autocomplete: 'off',
  });
  v.token = el('input', { type: 'password', name: 'token', id: `${formId}-token`, autocomplete: 'off', spellcheck: false });
  v.error = el('p', { className: 'error', role: 'alert' });
  v.submit = el('button', { type: 'submit', className: 'primary' }, 'Trigger run');
  const cancel = el('button', { type: 'button', className: 'cancel' }, 'Cancel');
  v.dateHint = el('p', { id: `${formId}-date-hint`, className: 'hint' });
  v.date.setAttribute('aria-describedby', v.dateHint.id);
  v.form = el('form', { id: formId, className: 'trigger-form', noValidate: true, hidden: true, 'aria-label': `Trigger a run of ${dag.name}` },
    el('div', { className: 'field' }, el('label', { htmlFor: v.date.id }, 'Logical date'), v.date, v.dateHint),
    field(v.paramsInput.id, 'Parameters', v.paramsInput,
      'One name=value a line, overriding the defaults. Leave empty for the defaults of the scheduler that runs it. ' +
      'Each trigger is a new run: earlier runs of the date keep their parameters and history.', true),
    field(v.token.id, 'Access token', v.token,
      'Needed when the server is reachable beyond this machine. Kept for this tab only.', true),
    v.error,
    el('div', { className: 'form-actions' }, v.submit, cancel));

  v.trigger.addEventListener('click', () => (v.form.hidden ? openForm(v) : closeForm(v, false)));
  cancel.addEventListener('click', () => closeForm(v, true));
  v.form.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      closeForm(v, true);
    }
  });
  v.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitTrigger(v);
  });
  v.date.addEventListener('input', () => { v.dateTouched = true; });

  v.card = el('article', { className: 'panel dag-card', id: `dag-${dag.name}`, dataset: { dag: dag.name }, 'aria-labelledby': headId, tabIndex: -1 },
    el('div', { className: 'dag-card-head' },
      el('h2', { id: headId, className: 'dag-name' }, dag.name),
      v.trigger),
    v.desc,
    el('dl', { className: 'dag-facts' },
      fact('Schedule', v.schedule),
      fact('Next run', v.next),
      fact('Tasks', v.tasks)),
    v.params,
    el('div', { className: 'dag-runs' },
      el('h3', { className: 'runs-title' }, 'Latest runs'),
      v.runsList,
      v.noRuns,
      v.lastRun),
    v.status,
    v.form);
  views.set(dag.name, v);
  return v;
}

function openForm(v) {
  v.form.hidden = false;
  v.trigger.setAttribute('aria-expanded', 'true');
  if (!v.dateTouched || !v.date.value) v.date.value = todayIn(v.dag.timezone);
  if (!v.token.value) v.token.value = storedToken();
  v.status.replaceChildren();
  v.date.focus();
}

function closeForm(v, refocus) {
  v.form.hidden = true;
  v.trigger.setAttribute('aria-expanded', 'false');
  setFormError(v, '');
  if (refocus) v.trigger.focus();
}

function setFormError(v, msg, control = null) {
  v.error.textContent = msg;
  for (const c of [v.date, v.paramsInput, v.token]) c.removeAttribute('aria-invalid');
  if (control) {
    control.setAttribute('aria-invalid', 'true');
    control.focus();
  }
}

async function submitTrigger(v) {
  if (v.busy) return;
  setFormError(v, '');
  const date = v.date.value;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(date)) {
    setFormError(v, 'Choose the logical date of the run.', v.date);
    return;
  }
  let params;
  try {
    params = parseParams(v.paramsInput.value);
  } catch (err) {
    setFormError(v, err.message, v.paramsInput);
    return;
  }
  const token = v.token.value.trim() || storedToken();
  const body = { date };
  if (params) body.params = params;

  v.busy = true;
  v.submit.disabled = true;
  v.form.setAttribute('aria-busy', 'true');
  try {
    const res = await postJSON(`/api/dags/${encodeURIComponent(v.name)}/trigger`, body, token);
    if (token) storeToken(token);
    const id = res && isNum(res.run_id) ? res.run_id : null;
    closeForm(v, true);
    v.status.replaceChildren(
      `A new run of ${date} was triggered. `,
      id != null ? el('a', { href: `/dags/run/${id}` }, `View run ${id}`) : null);
    await refreshRuns(v);
  } catch (err) {
    if (err.status === 401) {
      storeToken(''); // whatever was kept is not the right one
      setFormError(v, err.message, v.token);
    } else if (err.status === 400 && /date/i.test(err.message)) {
      setFormError(v, err.message, v.date);
    } else if (err.status === 400) {
      setFormError(v, err.message, v.paramsInput);
    } else {
      setFormError(v, err.message);
    }
  } finally {
    v.busy = false;
    v.submit.disabled = false;
    v.form.removeAttribute('aria-busy');
  }
}

/** Re-reads the latest runs of one DAG. */
async function refreshRuns(v) {
  try {
    const body = await fetchJSON(`/api/dags/runs?dag=${encodeURIComponent(v.name)}&limit=${MAX_RUNS}`);
    const runs = Array.isArray(body && body.runs) ? body.runs.slice().reverse() : [];
    v.dag.recent = runs;
    renderRuns(v);
  } catch (err) {
    v.status.append(el('span', { className: 'error-text' }, ` Could not refresh its runs: ${err.message}`));
  }
}

function updateCard(v, dag) {
  v.dag = dag;
  v.desc.textContent = dag.description || '';
  v.desc.hidden = !dag.description;
  const tz = dag.timezone || 'UTC';

  // Schedule.
  if (dag.schedule) {
    const words = describeCron(dag.schedule);
    v.schedule.replaceChildren(
      el('code', { className: 'cron' }, dag.schedule), ' ',
      el('span', { className: 'tz' }, tz),
      words ? el('span', { className: 'cron-words' }, words) : null);
  } else {
    v.schedule.replaceChildren(el('span', { className: 'manual' }, 'manual'), ' ',
      el('span', { className: 'muted small' }, `(triggered only; dates in ${tz})`));
  }
  v.dateHint.textContent = `The run's date in ${tz}.`;
  renderNext(v);

  // Tasks in the order given, each with what it waits for.
  const tasks = Array.isArray(dag.tasks) ? dag.tasks : [];
  v.tasks.replaceChildren(tasks.length
    ? el('ol', { className: 'dag-tasks' }, ...tasks.map((t) => el('li', { dataset: { task: t.name } },
      el('code', {}, t.name),
      Array.isArray(t.deps) && t.deps.length ? el('span', { className: 'deps' }, ` after ${t.deps.join(', ')}`) : null)))
    : el('span', { className: 'muted' }, 'none'));

  // Default parameters.
  const params = Object.entries(dag.params || {}).sort(([a], [b]) => a.localeCompare(b));
  // These are this server's; a run takes those of the scheduler node that
  // runs it, which may be set differently (its --retention, say).
  v.paramsCount.textContent = `Default parameters (${params.length}, as this server has them)`;
  v.paramsRows.replaceChildren(...params.map(([k, val]) => el('tr', {},
    el('th', { scope: 'row' }, el('code', {}, k)),
    el('td', {}, val === '' ? el('span', { className: 'muted' }, '(empty)') : el('code', {}, val)))));
  v.params.hidden = params.length === 0;
  // The placeholder shows the parameters most likely wanted: those without a default first.
  const hinted = [...params.filter(([, val]) => val === ''), ...params.filter(([, val]) => val !== '')];
  v.paramsInput.placeholder = hinted.length ? hinted.slice(0, 3).map(([k, val]) => `${k}=${val}`).join('\n') : 'name=value';

  renderRuns(v);
}

function renderNext(v, now = Date.now()) {
  const dag = v.dag;
  const t = dag.next_run ? new Date(dag.next_run) : null;
  if (!t || Number.isNaN(t.getTime())) {
    v.next.replaceChildren(el('span', { className: 'muted' }, dag.schedule ? '–' : 'manual only'));
    return;
  }
  const local = localFmt.format(t);
  const utc = utcFmt.format(t);
  v.next.replaceChildren(
    el('time', { dateTime: dag.next_run, className: 'next-local' }, local),
    ' ',
    el('span', { className: 'next-rel muted' }, fmtUntil(t.getTime() - now)));
  // In a browser on UTC the two lines would say the same thing twice.
  if (utc !== local) v.next.append(el('span', { className: 'next-utc' }, utc));
}

// ---- the run squares ---------------------------------------------------------------------

const KINDS = { scheduled: 'scheduled', manual: 'manual', backfill: 'backfill' };

function runLabel(run, tz) {
  const state = runState(run);
  const d = runDuration(run);
  const dur = d == null ? 'not started' : (state === 'running' ? `${fmtDuration(d)} so far` : fmtDuration(d));
  // A date may have several runs (a scheduled one, manual ones): the kind
  // tells them apart.
  return { state, date: fmtLogical(run.logical_date, tz), dur, kind: KINDS[run.kind] || '' };
}

function paintSquare(a, run, tz) {
  const { state, date, dur, kind } = runLabel(run, tz);
  a.dataset.state = state;
  a.dataset.kind = kind;
  a.title = `${date}${kind ? ` (${kind})` : ''} · ${state} · ${dur}`;
  a.setAttribute('aria-label', `Run ${run.id}${kind ? `, ${kind}` : ''}: ${date}, ${state}, ${dur}`);
}

function sortRuns(runs) {
  runs.sort((a, b) => (Date.parse(a.logical_date) - Date.parse(b.logical_date)) || (a.id - b.id));
  if (runs.length > MAX_RUNS) runs.splice(0, runs.length - MAX_RUNS);
  return runs;
}

/**
 * Shows v.dag.recent as squares, oldest first. Squares are kept by run id
 * and only moved when the order changes, so a focused square keeps focus.
 */
function renderRuns(v) {
  const runs = sortRuns(Array.isArray(v.dag.recent) ? v.dag.recent : []);
  v.dag.recent = runs;
  const tz = v.dag.timezone || 'UTC';
  const want = new Set(runs.map((r) => r.id));
  for (const [id, li] of v.nodes) {
    if (!want.has(id)) {
      li.remove();
      v.nodes.delete(id);
    }
  }
  runs.forEach((run, i) => {
    let li = v.nodes.get(run.id);
    if (!li) {
      const a = el('a', { className: 'run-sq', href: `/dags/run/${run.id}`, dataset: { runId: String(run.id) } });
      li = el('li', {}, a);
      v.nodes.set(run.id, li);
    }
    paintSquare(li.firstChild, run, tz);
    const at = v.runsList.children[i];
    if (at !== li) v.runsList.insertBefore(li, at || null);
  });
  v.runsList.hidden = runs.length === 0;
  v.noRuns.hidden = runs.length > 0;
  const last = runs[runs.length - 1];
  if (last) {
    const { state, date, dur } = runLabel(last, tz);
    v.lastRun.replaceChildren('Latest: ',
      el('a', { href: `/dags/run/${last.id}` }, `run ${last.id}`),
      ` for ${date} — `,
      el('span', { className: 'state-text', dataset: { state } }, state),
      `, ${dur}`);
  } else {
    v.lastRun.replaceChildren();
  }
}

/** Applies one run from the stream; true when it was a run not seen before. */
function applyRun(run) {
  if (!run || !isNum(run.id)) return false;
  const v = views.get(run.dag);
  if (!v) {
    scheduleReload();
    return true;
  }
  const recent = Array.isArray(v.dag.recent) ? v.dag.recent : (v.dag.recent = []);
  const i = recent.findIndex((r) => r.id === run.id);
  if (i >= 0) recent[i] = run;
  else recent.push(run);
  renderRuns(v);
  return i < 0;
}

// ---- loading ---------------------------------------------------------------------------------

function apply(list) {
  const dags = Array.isArray(list) ? list : [];
  const seen = new Set();
  let prev = null;
  for (const dag of dags) {
    if (!dag || typeof dag.name !== 'string') continue;
    seen.add(dag.name);
    const v = views.get(dag.name) || makeCard(dag);
    updateCard(v, dag);
    // Keep the server's order.
    const next = prev ? prev.card.nextElementSibling : listEl.firstElementChild;
    if (next !== v.card) listEl.insertBefore(v.card, next);
    prev = v;
  }
  for (const [name, v] of views) {
    if (!seen.has(name)) {
      v.card.remove();
      views.delete(name);
    }
  }
  $('empty').hidden = views.size > 0;
}

async function load() {
  try {
    apply(await fetchJSON('/api/dags'));
    showError('');
  } catch (err) {
    showError(`Could not load the jobs: ${err.message}`);
  }
}

let reloadTimer = 0;
/** Re-reads the list soon (a new run moves the next run time on). */
function scheduleReload() {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = 0;
    if (ready) loadThenFlush();
  }, 1500);
}

// Open the stream first and hold its events until the list is in, so
// nothing that happens in between is lost.
let ready = false;
const held = [];
function onRun(run) {
  if (!ready) {
    held.push(run);
    return;
  }
  if (applyRun(run)) scheduleReload();
}

async function loadThenFlush() {
  ready = false;
  await load();
  ready = true;
  for (const run of held.splice(0)) onRun(run);
}

openStream('/api/stream?dagruns=1', {
  dagrun: onRun,
  reconnected: () => { loadThenFlush(); },
});

// The clock: "in 5 min" and the running runs' durations move on.
setInterval(() => {
  const now = Date.now();
  for (const v of views.values()) {
    renderNext(v, now);
    if ((v.dag.recent || []).some((r) => r.state === 'running')) renderRuns(v);
  }
}, 30000);

await loadThenFlush();
$('loading').hidden = true;
window.stockpipe.loaded = true;

// A link to /dags#dag-NAME lands on that DAG's card once it exists.
if (location.hash.startsWith('#dag-')) {
  const card = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (card) {
    card.scrollIntoView();
    card.focus({ preventScroll: true });
  }
}
