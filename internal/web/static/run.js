// A DAG run's page: the run's facts and parameters, its tasks drawn as a
// graph (one column per layer, a task's layer being the longest path to it
// from a root) with SVG arrows from each dependency, a table of the tasks'
// times, the checks of the tasks that check data, and the selected task's
// error and log. /api/dags/runs/{id} is read
// again whenever a "dagrun" event of /api/stream names this run.

// The shared helpers are loaded with this module's own ?v= query so that a
// new release never mixes old and new modules.
const { fetchJSON, openStream, showError, el, fmtDateTime, fmtTime, isNum, fmtDuration, RUN_STATES, fmtLogical } = await import(`./common.js${new URL(import.meta.url).search}`);

const SVG_NS = 'http://www.w3.org/2000/svg';
const TASK_STATES = new Set(['waiting', 'queued', 'running', 'success', 'failed', 'upstream_failed']);
const MAX_SIBLINGS = 25;

const $ = (id) => document.getElementById(id);
const runId = Number(document.body.dataset.runId);

// Read-only hooks for browser tests.
window.stockpipe = {
  loaded: false,
  state: '',
};

/** The page's picture: the run, its tasks, and its DAG from /api/dags. */
const view = {
  run: null,
  tasks: [],
  fetchedAt: 0, // Date.now() when tasks were read, for running durations
  dag: null,
  selected: '',
  structure: '', // the task graph's shape, to redraw only when it changes
  boxes: new Map(), // task name → { box, state, meta }
  rows: new Map(), // task name → { tr, state, attempts, started, finished, duration }
  siblings: new Map(), // run id → <li>
  shownOnce: false, // whether the first picture was shown
  checksKey: '', // the checks shown, to rebuild their tables only when they change
};

// ---- formatting ------------------------------------------------------------------

const stateText = (s) => String(s || '').replace(/_/g, ' ');
const runState = (s) => (RUN_STATES.has(s) ? s : 'queued');
const taskState = (s) => (TASK_STATES.has(s) ? s : 'waiting');

function runDuration(run, now = Date.now()) {
  if (!run || !run.started) return null;
  const start = Date.parse(run.started);
  const end = run.finished ? Date.parse(run.finished) : now;
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, end - start) : null;
}

/** A task's duration: the server's figure, moved on for a running task. */
function taskDuration(t, now = Date.now()) {
  if (t.state === 'running' && isNum(t.duration_ms)) return t.duration_ms + Math.max(0, now - view.fetchedAt);
  if (!t.started && !t.finished && !t.duration_ms) return null;
  return isNum(t.duration_ms) ? t.duration_ms : null;
}

function timeEl(ts, short = false) {
  if (!ts) return el('span', { className: 'muted' }, '–');
  return el('time', { dateTime: ts, title: fmtDateTime(ts) }, short ? fmtTime(ts) : fmtDateTime(ts));
}

function attemptsText(n) {
  return isNum(n) && n > 0 ? `${n} attempt${n === 1 ? '' : 's'}` : 'not tried';
}

// ---- the run's facts --------------------------------------------------------------

const tzOf = () => (view.dag && view.dag.timezone) || 'UTC';

function renderRun() {
  const run = view.run;
  const state = runState(run.state);
  const tz = tzOf();
  const dagHref = `/dags#dag-${encodeURIComponent(run.dag)}`;
  $('dag-link').textContent = run.dag;
  $('dag-link').href = dagHref;
  $('run-dag').textContent = `· ${run.dag}`;
  const badge = $('run-state');
  badge.dataset.state = state;
  badge.textContent = state;
  badge.hidden = false;
  $('crumb-dag').hidden = false;
  $('run-body').hidden = false;

  $('fact-dag').replaceChildren(el('a', { href: dagHref }, run.dag),
    view.dag && view.dag.description ? el('span', { className: 'fact-note muted small' }, view.dag.description) : null);
  $('fact-date').replaceChildren(
    el('time', { dateTime: run.logical_date || '' }, fmtLogical(run.logical_date, tz)),
    ' ', el('span', { className: 'muted small' }, `(${tz})`));
  $('fact-state').replaceChildren(el('span', { className: 'state-text', dataset: { state } }, state));
  $('fact-started').replaceChildren(timeEl(run.started));
  $('fact-finished').replaceChildren(run.finished ? timeEl(run.finished)
    : el('span', { className: 'muted' }, run.started ? 'still running' : '–'));
  renderRunDuration();

  $('fact-kind').textContent = KIND_TEXT[run.kind] || '–';

  // The parameters the run executes with once it has started (the
  // defaults of the node that started it, overridden by those given);
  // before that only those given are known.
  const given = run.given_params || {};
  const resolved = run.params && typeof run.params === 'object';
  const params = Object.entries(resolved ? run.params : given).sort(([a], [b]) => a.localeCompare(b));
  $('params-rows').replaceChildren(...params.map(([k, v]) => el('tr', { dataset: { param: k, given: String(Object.hasOwn(given, k)) } },
    el('th', { scope: 'row' }, el('code', {}, k)),
    el('td', {}, v === '' ? el('span', { className: 'muted' }, '(empty)') : el('code', {}, v),
      resolved && Object.hasOwn(given, k) ? el('span', { className: 'muted small' }, ' (given)') : null))));
  $('params-note').textContent = resolved
    ? (run.params_node ? `The defaults of scheduler node ${run.params_node}, with those given at the trigger (marked).` : '')
    : 'Those given at the trigger; the defaults are added by the scheduler node that starts the run.';
  $('params-body').hidden = params.length === 0;
  $('params-empty').hidden = params.length > 0;
}

const KIND_TEXT = {
  scheduled: 'the schedule',
  manual: 'a manual trigger',
  backfill: 'a backfill',
};

/**
 * Where a task runs, or ran: its node and, while it runs, how long ago the
 * node last reported it alive, counted on from the server's figure (not
 * from this browser's clock). A node silent for longer than the timeout is
 * presumed stopped, and a live node takes the task over.
 */
function nodeText(t, now = Date.now()) {
  if (!t.node) return '';
  if (t.state !== 'running' || !isNum(t.heartbeat_age_ms)) return t.node;
  const age = t.heartbeat_age_ms + Math.max(0, now - view.fetchedAt);
  const stale = isNum(t.heartbeat_timeout_ms) && age > t.heartbeat_timeout_ms;
  return `${t.node} · ${stale ? 'no report for' : 'reported'} ${fmtDuration(age)}${stale ? ': presumed stopped, another node takes it over' : ' ago'}`;
}

function renderRunDuration(now = Date.now()) {
  const d = runDuration(view.run, now);
  $('fact-duration').textContent = d == null ? '–' : (view.run.finished ? fmtDuration(d) : `${fmtDuration(d)} so far`);
}

// ---- the task graph ----------------------------------------------------------------

/** Groups tasks into layers by the longest path from a root. */
function layersOf(tasks) {
  const byName = new Map(tasks.map((t) => [t.task, t]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle, which the scheduler refuses
    visiting.add(name);
    let d = 0;
    for (const dep of byName.get(name).deps || []) {
      if (byName.has(dep)) d = Math.max(d, depthOf(dep) + 1);
    }
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  const layers = [];
  for (const t of tasks) (layers[depthOf(t.task)] ||= []).push(t);
  const compact = layers.filter(Boolean);
  // Order each layer by where its tasks' dependencies sit, to limit crossings.
  const pos = new Map();
  compact.forEach((layer, li) => {
    if (li > 0) {
      const key = (t) => {
        const ps = (t.deps || []).filter((d) => pos.has(d)).map((d) => pos.get(d));
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0;
      };
      layer.sort((a, b) => key(a) - key(b));
    }
    layer.forEach((t, i) => pos.set(t.task, i));
  });
  return compact;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

let edgesSvg = null;
let graphInner = null;
const resizeObs = typeof ResizeObserver === 'function' ? new ResizeObserver(() => drawEdges()) : null;

function buildGraph(tasks) {
  const graph = $('graph');
  view.boxes.clear();
  if (resizeObs) resizeObs.disconnect();
  edgesSvg = svgEl('svg', { class: 'graph-edges', 'aria-hidden': 'true', focusable: 'false' });
  const defs = svgEl('defs');
  const marker = svgEl('marker', {
    id: 'graph-arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse',
  });
  marker.append(svgEl('path', { d: 'M0,0 L10,5 L0,10 z', class: 'graph-arrowhead' }));
  defs.append(marker);
  edgesSvg.append(defs);

  const layers = layersOf(tasks);
  graphInner = el('div', { className: 'graph-inner' }, edgesSvg,
    ...layers.map((layer, i) => el('div', { className: 'graph-layer', role: 'group', 'aria-label': `Layer ${i + 1}` },
      ...layer.map((t) => {
        const b = {
          state: el('span', { className: 'task-state' }),
          meta: el('span', { className: 'task-meta' }),
        };
        b.box = el('button', {
          type: 'button', className: 'task-box', dataset: { task: t.task }, 'aria-pressed': 'false', 'aria-controls': 'task-log',
        }, el('span', { className: 'task-name' }, t.task), b.state, b.meta);
        b.box.addEventListener('click', () => select(t.task, true));
        view.boxes.set(t.task, b);
        return b.box;
      }))));
  graph.replaceChildren(graphInner);
  if (resizeObs) resizeObs.observe(graphInner);
}

function paintBoxes(now = Date.now()) {
  for (const t of view.tasks) {
    const b = view.boxes.get(t.task);
    if (!b) continue;
    const state = taskState(t.state);
    b.box.dataset.state = state;
    b.box.setAttribute('aria-pressed', String(view.selected === t.task));
    b.state.textContent = stateText(state);
    const d = taskDuration(t, now);
    b.meta.textContent = [attemptsText(t.attempts), d == null ? null : fmtDuration(d)].filter(Boolean).join(' · ');
    const deps = (t.deps || []).length ? `after ${t.deps.join(', ')}` : 'a root task';
    b.box.title = `${t.task} · ${stateText(state)} · ${deps}`;
  }
}

/** Draws an arrow from each dependency's box to its dependant's. */
function drawEdges() {
  if (!edgesSvg || !graphInner || !graphInner.isConnected) return;
  const base = graphInner.getBoundingClientRect();
  const w = Math.ceil(graphInner.scrollWidth);
  const h = Math.ceil(graphInner.scrollHeight);
  edgesSvg.setAttribute('width', w);
  edgesSvg.setAttribute('height', h);
  edgesSvg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const vertical = getComputedStyle(graphInner).flexDirection.startsWith('column');
  for (const old of edgesSvg.querySelectorAll('path.graph-edge')) old.remove();
  const rect = (name) => {
    const b = view.boxes.get(name);
    if (!b) return null;
    const r = b.box.getBoundingClientRect();
    return { l: r.left - base.left, t: r.top - base.top, r: r.right - base.left, b: r.bottom - base.top, w: r.width, h: r.height };
  };
  const byName = new Map(view.tasks.map((t) => [t.task, t]));
  for (const t of view.tasks) {
    const to = rect(t.task);
    if (!to) continue;
    for (const dep of t.deps || []) {
      const from = rect(dep);
      if (!from) continue;
      let d;
      if (vertical) {
        const x1 = from.l + from.w / 2;
        const y1 = from.b;
        const x2 = to.l + to.w / 2;
        const y2 = to.t - 1;
        const c = Math.max(12, (y2 - y1) / 2);
        d = `M${x1},${y1} C${x1},${y1 + c} ${x2},${y2 - c} ${x2},${y2}`;
      } else {
        const x1 = from.r;
        const y1 = from.t + from.h / 2;
        const x2 = to.l - 1;
        const y2 = to.t + to.h / 2;
        const c = Math.max(16, (x2 - x1) / 2);
        d = `M${x1},${y1} C${x1 + c},${y1} ${x2 - c},${y2} ${x2},${y2}`;
      }
      const src = byName.get(dep);
      edgesSvg.append(svgEl('path', {
        d, class: 'graph-edge', 'data-state': taskState(src && src.state), 'marker-end': 'url(#graph-arrow)',
      }));
    }
  }
}

// ---- the tasks table ---------------------------------------------------------------

function renderTable(now = Date.now()) {
  const tbody = $('task-rows');
  const rows = [];
  for (const t of view.tasks) {
    let r = view.rows.get(t.task);
    if (!r) {
      r = {
        state: el('td'), attempts: el('td', { className: 'num' }), started: el('td'), finished: el('td'),
        duration: el('td', { className: 'num' }), node: el('td', { className: 'task-node' }),
      };
      r.tr = el('tr', {}, el('th', { scope: 'row' }, el('code', {}, t.task)), r.state, r.attempts, r.started, r.finished, r.duration, r.node);
      view.rows.set(t.task, r);
    }
    const state = taskState(t.state);
    r.state.replaceChildren(el('span', { className: 'state-text', dataset: { state } }, stateText(state)));
    r.attempts.textContent = isNum(t.attempts) ? String(t.attempts) : '–';
    r.started.replaceChildren(timeEl(t.started, true));
    r.finished.replaceChildren(timeEl(t.finished, true));
    const d = taskDuration(t, now);
    r.duration.textContent = d == null ? '–' : fmtDuration(d);
    r.node.textContent = nodeText(t, now) || '–';
    rows.push(r.tr);
  }
  const names = new Set(view.tasks.map((t) => t.task));
  for (const name of view.rows.keys()) if (!names.has(name)) view.rows.delete(name);
  tbody.replaceChildren(...rows);
}

// ---- the checks ----------------------------------------------------------------------

const RESULTS = {
  pass: { state: 'success', text: '✓ pass' },
  fail: { state: 'failed', text: '✕ fail' },
  skipped: { state: 'waiting', text: '– skipped' },
};

function checkRow(c) {
  const result = c.skipped ? 'skipped' : (c.passed ? 'pass' : 'fail');
  const r = RESULTS[result];
  return el('tr', { dataset: { check: String(c.name || ''), result } },
    el('th', { scope: 'row' }, el('code', {}, String(c.name || ''))),
    el('td', { className: 'num measured' }, c.skipped ? '–' : String(c.measured ?? '')),
    el('td', { className: 'num limit' }, String(c.limit ?? '')),
    // The result in words as well as in colour.
    el('td', { className: 'result' }, el('span', { className: 'state-text', dataset: { state: r.state } }, r.text)),
    el('td', { className: 'check-detail' }, String(c.detail || '')));
}

function checksBlock(t) {
  const failed = t.checks.filter((c) => !c.passed).length;
  const headId = `checks-${t.task}`;
  const verdict = failed ? `${failed} of ${t.checks.length} failed` : `all ${t.checks.length} passed`;
  return el('div', { className: 'checks-block', dataset: { task: t.task, failed: String(failed) } },
    el('h3', { id: headId }, el('code', {}, t.task), ` · ${verdict}`),
    el('div', { className: 'table-scroll', tabIndex: 0, role: 'region', 'aria-labelledby': headId },
      el('table', { className: 'pl-table checks-table' },
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col' }, 'Check'),
          el('th', { scope: 'col', className: 'num' }, 'Measured'),
          el('th', { scope: 'col', className: 'num' }, 'Threshold'),
          el('th', { scope: 'col' }, 'Result'),
          el('th', { scope: 'col' }, 'Detail'))),
        el('tbody', {}, ...t.checks.map(checkRow)))));
}

/** One table per task that recorded checks; the panel hides when none did. */
function renderChecks() {
  const checked = view.tasks.filter((t) => Array.isArray(t.checks) && t.checks.length > 0);
  const key = JSON.stringify(checked.map((t) => [t.task, t.checks]));
  if (key === view.checksKey) return;
  view.checksKey = key;
  $('checks').replaceChildren(...checked.map(checksBlock));
  $('checks-panel').hidden = checked.length === 0;
}

// ---- the selected task -------------------------------------------------------------

function select(name, fromUser) {
  view.selected = name;
  paintBoxes();
  renderDetail(true);
  if (fromUser) $('task-log').scrollIntoView({ block: 'nearest' });
}

let shownKey = '';
function renderDetail(fresh = false) {
  const pre = $('task-log');
  const t = view.tasks.find((x) => x.task === view.selected);
  if (!t) {
    $('task-title').textContent = 'Task log';
    $('task-meta').textContent = view.tasks.length ? 'Select a task above to see its error and the end of its log.' : '';
    pre.hidden = true;
    pre.replaceChildren();
    shownKey = '';
    return;
  }
  const state = taskState(t.state);
  $('task-title').replaceChildren('Task ', el('code', {}, t.task));
  const d = taskDuration(t);
  $('task-meta').replaceChildren(
    el('span', { className: 'state-text', dataset: { state } }, stateText(state)),
    ` · ${attemptsText(t.attempts)}`,
    d == null ? '' : ` · ${fmtDuration(d)}`,
    t.started ? ` · started ${fmtTime(t.started)}` : '',
    t.finished ? ` · finished ${fmtTime(t.finished)}` : '',
    t.node ? ` · on ${nodeText(t)}` : '');
  const key = `${t.task}\u0000${t.error || ''}\u0000${t.log || ''}`;
  if (key === shownKey && !fresh) return;
  shownKey = key;
  // Follow the end of the log unless the reader has scrolled up in it.
  const atEnd = fresh || pre.hidden || pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const parts = [];
  if (t.error) parts.push(el('span', { className: 'log-error' }, `Error: ${t.error}`), '\n\n');
  if (t.log) parts.push(el('span', { className: 'log-text' }, t.log));
  else parts.push(el('span', { className: 'log-none' }, state === 'waiting' || state === 'queued' ? '(not started yet)' : '(no log output)'));
  pre.replaceChildren(...parts);
  pre.setAttribute('aria-label', `Error and log of task ${t.task}`);
  pre.hidden = false;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

// ---- other runs of the DAG -----------------------------------------------------------

function paintSibling(a, run) {
  const state = runState(run.state);
  const date = fmtLogical(run.logical_date, tzOf());
  const d = runDuration(run);
  const dur = d == null ? 'not started' : (state === 'running' ? `${fmtDuration(d)} so far` : fmtDuration(d));
  a.dataset.state = state;
  a.title = `${date} · ${state} · ${dur}`;
  const here = run.id === runId;
  a.setAttribute('aria-label', `Run ${run.id}: ${date}, ${state}, ${dur}${here ? ' (this run)' : ''}`);
  if (here) a.setAttribute('aria-current', 'page');
  else a.removeAttribute('aria-current');
}

function renderSiblings() {
  const list = $('siblings');
  const runs = view.dag && Array.isArray(view.dag.recent) ? view.dag.recent : [];
  runs.sort((a, b) => (Date.parse(a.logical_date) - Date.parse(b.logical_date)) || (a.id - b.id));
  if (runs.length > MAX_SIBLINGS) runs.splice(0, runs.length - MAX_SIBLINGS);
  const want = new Set(runs.map((r) => r.id));
  for (const [id, li] of view.siblings) {
    if (!want.has(id)) {
      li.remove();
      view.siblings.delete(id);
    }
  }
  runs.forEach((run, i) => {
    let li = view.siblings.get(run.id);
    if (!li) {
      li = el('li', {}, el('a', { className: 'run-sq', href: `/dags/run/${run.id}`, dataset: { runId: String(run.id) } }));
      view.siblings.set(run.id, li);
    }
    paintSibling(li.firstChild, run);
    const at = list.children[i];
    if (at !== li) list.insertBefore(li, at || null);
  });
  list.hidden = runs.length === 0;
  $('siblings-empty').hidden = runs.length > 0 || !view.dag;
}

// ---- loading -------------------------------------------------------------------------

function applyRunBody(body) {
  if (!body || !body.run) return;
  view.run = body.run;
  view.tasks = Array.isArray(body.tasks) ? body.tasks.filter((t) => t && typeof t.task === 'string') : [];
  for (const t of view.tasks) if (!Array.isArray(t.deps)) t.deps = [];
  view.fetchedAt = Date.now();
  window.stockpipe.state = runState(view.run.state);

  renderRun();
  const structure = view.tasks.map((t) => `${t.task}<${t.deps.join(',')}`).join('|');
  if (structure !== view.structure) {
    view.structure = structure;
    buildGraph(view.tasks);
  }
  if (view.selected && !view.tasks.some((t) => t.task === view.selected)) view.selected = '';
  if (!view.shownOnce) {
    // On arrival a failed run shows why it failed.
    view.shownOnce = true;
    const failed = view.tasks.find((t) => t.state === 'failed');
    if (failed && !view.selected) view.selected = failed.task;
  }
  paintBoxes();
  renderTable();
  renderChecks();
  renderDetail();
  $('graph-empty').hidden = view.tasks.length > 0;
  requestAnimationFrame(drawEdges);

  // This run's newest state also belongs in the strip of its DAG's runs.
  if (view.dag) upsertSibling(view.run);
  tickClock();
}

function upsertSibling(run) {
  if (!view.dag) return;
  const recent = Array.isArray(view.dag.recent) ? view.dag.recent : (view.dag.recent = []);
  const i = recent.findIndex((r) => r.id === run.id);
  if (i >= 0) recent[i] = run;
  else recent.push(run);
  renderSiblings();
}

async function loadDAG() {
  if (!view.run) return;
  try {
    const list = await fetchJSON('/api/dags');
    view.dag = (Array.isArray(list) ? list : []).find((d) => d && d.name === view.run.dag) || null;
  } catch {
    view.dag = null; // the run itself still shows; times are then in UTC
  }
  renderRun();
  if (view.dag) upsertSibling(view.run);
  else renderSiblings();
}

async function loadRun() {
  try {
    applyRunBody(await fetchJSON(`/api/dags/runs/${runId}`));
    showError('');
    return true;
  } catch (err) {
    showError(`Could not load run ${runId}: ${err.message}`);
    return false;
  }
}

/** Reads the run again; calls made while a read is under way coalesce. */
let loading = null;
let again = false;
function refresh() {
  if (loading) {
    again = true;
    return loading;
  }
  loading = (async () => {
    do {
      again = false;
      await loadRun();
    } while (again);
  })().finally(() => { loading = null; });
  return loading;
}

function onRun(run) {
  if (!run || !isNum(run.id)) return;
  if (run.id === runId) refresh();
  else if (view.run && run.dag === view.run.dag) upsertSibling(run);
}

// Open the stream first and hold its events until the run is in, so
// nothing that happens in between is lost.
let ready = false;
const held = [];

openStream('/api/stream?dagruns=1', {
  dagrun: (run) => (ready ? onRun(run) : held.push(run)),
  reconnected: () => {
    refresh().then(loadDAG);
  },
});

// The clock: a running run's and its running tasks' durations move on.
let clock = 0;
function tickClock() {
  const live = view.run && (view.run.state === 'running' || view.tasks.some((t) => t.state === 'running'));
  if (live && !clock) clock = setInterval(onClock, 1000);
  if (!live && clock) {
    clearInterval(clock);
    clock = 0;
  }
}
function onClock() {
  const now = Date.now();
  renderRunDuration(now);
  paintBoxes(now);
  renderTable(now);
  renderDetail();
}

if (!Number.isInteger(runId) || runId <= 0) {
  showError('This page needs a run id.');
} else {
  await refresh();
  await loadDAG();
}
$('loading').hidden = true;
window.stockpipe.loaded = true;
ready = true;
for (const run of held.splice(0)) onRun(run);
