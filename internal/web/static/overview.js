// The overview page: status strip, live watchlist with sparklines, and the
// anomaly feed, all fed by /api/symbols, /api/anomalies and /api/stream.
// The stream is asked for what the page shows only (the latest price of
// each symbol, 1m candles, anomalies, status), and what it brings is
// applied once per animation frame.

// The shared helpers are loaded with this module's own ?v= query so that a
// new release never mixes old and new modules.
const {
  fetchJSON, openStream, showError, el, anomalyItem,
  fmtPrice, fmtChange, fmtVolume, fmtAge, fmtInt, fmtDec1, fmtStamp, direction, kindLabel,
  cssVar, onThemeChange,
} = await import(`./common.js${new URL(import.meta.url).search}`);

const MAX_ANOMALIES = 100;
const SPARK_POINTS = 60;
const SPARK_W = 120;
const SPARK_H = 30;

const tbody = document.getElementById('watchlist');
const emptyEl = document.getElementById('empty');
const loadingEl = document.getElementById('loading');
const feed = document.getElementById('anomalies');
const feedEmpty = document.getElementById('anomalies-empty');
const filterInput = document.getElementById('filter');
const filterEmpty = document.getElementById('filter-empty');

const params = new URLSearchParams(location.search);
// A row whose last trade is older than this many seconds is marked stale.
// ?stale=N overrides it, so that a test need not wait a minute.
const STALE_AFTER = (() => {
  const v = Number(params.get('stale'));
  return Number.isFinite(v) && v > 0 ? v : 60;
})();
document.getElementById('stale-after').textContent = STALE_AFTER % 60 === 0 ? `${STALE_AFTER / 60} min` : `${STALE_AFTER} s`;

/** symbol → row state (see makeRow). */
const rows = new Map();

// Read-only hooks for browser tests: messages counts the stream's events
// as they arrive, by name in events; bytes sums the length of their data
// (re-encoded: the server sends compact JSON, so it matches what came but
// for the SSE framing); frames counts the animation frames that applied
// some.
window.stockpipe = {
  loaded: false,
  symbols: () => rows.size,
  messages: 0,
  events: {},
  bytes: 0,
  frames: 0,
};

// ---- the watchlist --------------------------------------------------------

// The calendar day in New York of a moment, as the server counts the day.
const nyDay = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/New_York', year: 'numeric', month: '2-digit', day: '2-digit' });
const dayOf = (sec) => nyDay.format(new Date(sec * 1000));
const unix = (ts) => Math.floor(Date.parse(ts) / 1000);

function makeRow(symbol) {
  const href = `/symbol/${encodeURIComponent(symbol)}`;
  const cells = {
    price: el('td', { className: 'num price' }, '–'),
    change: el('td', { className: 'num col-change change' }, '–'),
    pct: el('td', { className: 'num change-pct' }, '–'),
    prev: el('td', { className: 'num col-prev change-prev' }, '–'),
    volume: el('td', { className: 'num volume' }, '–'),
    age: el('td', { className: 'num col-age age' }),
  };
  const ageTime = el('time', {}, '–');
  cells.age.append(ageTime);
  const badge = el('span', { className: 'stale-badge', hidden: true }, 'stale');
  const canvas = el('canvas', { className: 'spark', width: SPARK_W, height: SPARK_H, role: 'img' });
  canvas.setAttribute('aria-label', `${symbol} price over the last hour`);
  const tr = el('tr', { dataset: { symbol }, tabIndex: -1 },
    el('th', { scope: 'row' }, el('a', { href }, symbol), ' ', badge),
    cells.price, cells.change, cells.pct, cells.prev,
    el('td', { className: 'col-spark' }, canvas),
    cells.volume,
    cells.age,
  );
  const row = {
    symbol, href, tr, cells, canvas, badge, ageTime,
    last: null, dayOpen: null, volume: null,
    prevClose: null, // the previous New York day's close, null without one
    ts: null, // the last trade's time, ms since the epoch
    shownTs: null, // the time the age cell's tooltip names
    dir: null, // the change's direction, which colours the sparkline
    bucket: null, // unix seconds of the latest 1m bucket
    loadedBucket: null, // the latest bucket when the watchlist was read: its volume counts those up to it
    // Volume counted so far of each recent 1m bucket: a bucket's later
    // updates (its final state, sent after a newer bucket began) add
    // only what they add.
    bucketVols: new Map(),
    spark: [],
    sparkTimes: [], // the bucket of each spark point, null for those read with the watchlist but the last
    sparkDirty: true,
    flash: null, // the running flash animation
  };
  rows.set(symbol, row);
  tr.hidden = !matches(row);
  placeRow(row);
  updateEmpty();
  updateFilterEmpty();
  if (!focusRow) setFocusRow(row);
  return row;
}

function applyQuote(q) {
  const row = rows.get(q.symbol) || makeRow(q.symbol);
  row.dayOpen = q.day_open;
  row.prevClose = q.prev_close ?? null;
  row.volume = q.volume;
  row.bucket = q.bucket ? unix(q.bucket) : null;
  row.loadedBucket = row.bucket;
  row.bucketVols = new Map(row.bucket == null ? [] : [[row.bucket, q.bucket_volume || 0]]);
  row.spark = Array.isArray(q.spark) ? q.spark.slice(-SPARK_POINTS) : [];
  row.sparkTimes = row.spark.map((_, i) => (i === row.spark.length - 1 ? row.bucket : null));
  setTradeTime(row, q.ts);
  setPrice(row, q.last, false);
  renderVolume(row);
  markSpark(row);
}

// A changed price flashes its cell green or red. The Web Animations API
// restarts the flash without the forced synchronous layout that restarting
// a CSS animation by toggling its class needs.
const FLASH = {
  up: [{ backgroundColor: 'rgba(63, 185, 80, .45)' }, { backgroundColor: 'transparent' }],
  down: [{ backgroundColor: 'rgba(255, 123, 114, .45)' }, { backgroundColor: 'transparent' }],
};
const reducedMotion = window.matchMedia('(prefers-reduced-motion: reduce)');

function flashCell(row, dir) {
  if (row.flash) row.flash.cancel();
  row.flash = row.cells.price.animate(FLASH[dir], { duration: reducedMotion.matches ? 10 : 800, easing: 'ease-out' });
}

function setPrice(row, price, flash) {
  if (price == null || !Number.isFinite(price)) return;
  const prev = row.last;
  row.last = price;
  row.cells.price.textContent = fmtPrice(price);
  if (flash && prev != null && price !== prev) flashCell(row, price > prev ? 'up' : 'down');
  const change = row.dayOpen ? price - row.dayOpen : null;
  const pct = row.dayOpen ? (100 * change) / row.dayOpen : null;
  const dir = change == null ? null : direction(change);
  for (const [cell, text] of [[row.cells.change, fmtChange(change)], [row.cells.pct, fmtChange(pct, '%')]]) {
    cell.textContent = text;
    cell.classList.remove('up', 'down', 'flat');
    if (dir) cell.classList.add(dir);
  }
  // Since the previous close, the change a trader quotes across days.
  const vsClose = row.prevClose ? (100 * (price - row.prevClose)) / row.prevClose : null;
  row.cells.prev.textContent = fmtChange(vsClose, '%');
  row.cells.prev.title = row.prevClose ? `previous close ${fmtPrice(row.prevClose)}` : 'no earlier day stored';
  row.cells.prev.classList.remove('up', 'down', 'flat');
  if (vsClose != null) row.cells.prev.classList.add(direction(vsClose));
  if (dir !== row.dir) {
    row.dir = dir;
    markSpark(row);
  }
  sortDirty = true;
}

function renderVolume(row) {
  row.cells.volume.textContent = fmtVolume(row.volume);
  row.cells.volume.title = row.volume == null ? '' : fmtInt(row.volume);
  sortDirty = true;
}

// How long a bucket's volume is remembered for its later updates: far
// longer than any lateness the processor accepts.
const BUCKET_MEMORY = 30 * 60;

// Day volume and sparkline follow the symbol's 1m candles. The stream
// sends the newest bucket's state and every bucket's final one, so a
// bucket's last update may come after a newer bucket began.
function applyCandle(c) {
  if (c.interval !== '1m') return;
  const row = rows.get(c.symbol);
  if (!row) return;
  const t = c.t;
  if (row.bucket != null && t < row.bucket) {
    amendBucket(row, c);
    return;
  }
  if (row.bucket != null && t === row.bucket) {
    row.volume = (row.volume || 0) + c.volume - (row.bucketVols.get(t) || 0);
    if (row.spark.length) row.spark[row.spark.length - 1] = c.close;
    else {
      row.spark.push(c.close);
      row.sparkTimes.push(t);
    }
  } else {
    if (row.bucket == null || dayOf(t) !== dayOf(row.bucket)) {
      // A new trading day starts with this candle.
      row.dayOpen = c.open;
      row.volume = c.volume;
      row.bucketVols.clear();
    } else {
      row.volume = (row.volume || 0) + c.volume;
    }
    row.spark.push(c.close);
    row.sparkTimes.push(t);
    trimSpark(row);
  }
  row.bucket = t;
  row.bucketVols.set(t, c.volume);
  for (const old of row.bucketVols.keys()) {
    if (old < t - BUCKET_MEMORY) row.bucketVols.delete(old);
  }
  renderVolume(row);
  markSpark(row);
}

// An update of a bucket older than the newest: count what it adds to the
// day, and redraw its spark point.
function amendBucket(row, c) {
  const t = c.t;
  if (dayOf(t) !== dayOf(row.bucket) || t < row.bucket - BUCKET_MEMORY) return;
  const seen = row.bucketVols.get(t);
  if (seen == null && (row.loadedBucket == null || t <= row.loadedBucket)) return; // counted in the watchlist's volume
  row.volume = (row.volume || 0) + c.volume - (seen || 0);
  row.bucketVols.set(t, c.volume);
  const i = row.sparkTimes.lastIndexOf(t);
  if (i >= 0) {
    row.spark[i] = c.close;
  } else {
    // A bucket never seen: its point goes before the later ones added live.
    let at = row.sparkTimes.length;
    while (at > 0 && row.sparkTimes[at - 1] != null && row.sparkTimes[at - 1] > t) at--;
    row.spark.splice(at, 0, c.close);
    row.sparkTimes.splice(at, 0, t);
    trimSpark(row);
  }
  renderVolume(row);
  markSpark(row);
}

function trimSpark(row) {
  const extra = row.spark.length - SPARK_POINTS;
  if (extra > 0) {
    row.spark.splice(0, extra);
    row.sparkTimes.splice(0, extra);
  }
}

function applyTick(ev) {
  let row = rows.get(ev.symbol);
  if (!row) {
    // A symbol we have not seen: show it now, read its full line soon.
    row = makeRow(ev.symbol);
    scheduleRefresh();
  }
  setTradeTime(row, ev.ts);
  // A row coming back to life shows it at once, not at the next second.
  if (row.tr.classList.contains('stale')) renderAge(row, Date.now());
  setPrice(row, ev.price, true);
}

// ---- freshness ----------------------------------------------------------------

function setTradeTime(row, ts) {
  const ms = ts ? Date.parse(ts) : NaN;
  if (!Number.isFinite(ms) || (row.ts != null && ms <= row.ts)) return;
  row.ts = ms;
  sortDirty = true;
}

// The compact age of a trade: 12s, 3m, 2h, 5d.
function fmtShortAge(sec) {
  const s = Math.max(0, Math.floor(sec));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function renderAge(row, now) {
  if (row.ts == null) return;
  const age = (now - row.ts) / 1000;
  row.ageTime.textContent = fmtShortAge(age);
  if (row.shownTs !== row.ts) {
    row.shownTs = row.ts;
    const d = new Date(row.ts);
    row.ageTime.dateTime = d.toISOString();
    row.ageTime.title = `Last trade ${fmtStamp(d, true)}`;
  }
  const stale = age > STALE_AFTER;
  if (stale !== row.tr.classList.contains('stale')) {
    row.tr.classList.toggle('stale', stale);
    row.badge.hidden = !stale;
  }
}

// Ages move once a second, not with every tick: the text changes no
// faster than that anyway.
function renderAges() {
  const now = Date.now();
  for (const row of rows.values()) renderAge(row, now);
  renderStrip();
}

// ---- sorting, filtering and keyboard navigation ------------------------------

const sortButtons = [...document.querySelectorAll('.watchlist thead button.sort')];
let sortKey = 'symbol';
let sortDesc = false;
// Set when a value a sort may read changed; the rows are re-sorted at most
// once per frame, and only when the sort column is one that moves.
let sortDirty = false;

const changeOf = (r) => (r.dayOpen && r.last != null ? r.last - r.dayOpen : null);
const SORT_VALUES = {
  symbol: (r) => r.symbol,
  last: (r) => r.last,
  change: changeOf,
  pct: (r) => (r.dayOpen && r.last != null ? changeOf(r) / r.dayOpen : null),
  prev: (r) => (r.prevClose && r.last != null ? (r.last - r.prevClose) / r.prevClose : null),
  spark: (r) => (r.spark.length >= 2 && r.spark[0] ? (r.spark[r.spark.length - 1] - r.spark[0]) / r.spark[0] : null),
  volume: (r) => r.volume,
  age: (r) => (r.ts == null ? null : -r.ts), // the youngest trade first
};

const bySymbol = (a, b) => (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0);

// Rows without a value go last whichever the direction: a reversed sort
// should not open on a screenful of dashes.
function compareRows(a, b) {
  const get = SORT_VALUES[sortKey];
  const va = get(a);
  const vb = get(b);
  const na = va == null || (typeof va === 'number' && !Number.isFinite(va));
  const nb = vb == null || (typeof vb === 'number' && !Number.isFinite(vb));
  if (na || nb) return na === nb ? bySymbol(a, b) : na ? 1 : -1;
  let c = typeof va === 'string' ? (va < vb ? -1 : va > vb ? 1 : 0) : va - vb;
  if (sortDesc) c = -c;
  return c || bySymbol(a, b);
}

function placeRow(row) {
  let before = null;
  for (const r of rows.values()) {
    if (r !== row && compareRows(row, r) < 0 && (!before || compareRows(r, before) < 0)) before = r;
  }
  tbody.insertBefore(row.tr, before ? before.tr : null);
}

function sortRows() {
  sortDirty = false;
  // Moving a focused row out of the document takes the focus away.
  const focused = document.activeElement;
  const order = [...rows.values()].sort(compareRows);
  let at = tbody.firstElementChild;
  for (const row of order) {
    if (row.tr === at) at = at.nextElementSibling;
    else tbody.insertBefore(row.tr, at);
  }
  if (focused && focused !== document.activeElement && tbody.contains(focused)) focused.focus({ preventScroll: true });
}

function renderSortHeaders() {
  for (const b of sortButtons) {
    const th = b.closest('th');
    if (b.dataset.sort === sortKey) th.setAttribute('aria-sort', sortDesc ? 'descending' : 'ascending');
    else th.removeAttribute('aria-sort');
  }
}

for (const b of sortButtons) {
  b.addEventListener('click', () => {
    const key = b.dataset.sort;
    if (key === sortKey) sortDesc = !sortDesc;
    else {
      sortKey = key;
      // Numbers open with the largest first; names and ages read from the top.
      sortDesc = key !== 'symbol' && key !== 'age';
    }
    renderSortHeaders();
    sortRows();
  });
}
renderSortHeaders();

let filterText = '';
const matches = (row) => !filterText || row.symbol.toLowerCase().includes(filterText);

function updateFilterEmpty() {
  let any = false;
  for (const r of rows.values()) any = any || !r.tr.hidden;
  filterEmpty.hidden = !filterText || rows.size === 0 || any;
}

function applyFilter() {
  filterText = filterInput.value.trim().toLowerCase();
  for (const row of rows.values()) row.tr.hidden = !matches(row);
  updateFilterEmpty();
  if (focusRow && focusRow.tr.hidden) {
    const first = visibleRows()[0];
    setFocusRow(first ? rows.get(first.dataset.symbol) : null);
  }
}

filterInput.addEventListener('input', applyFilter);
filterInput.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  e.preventDefault();
  filterInput.value = '';
  applyFilter();
});

// One row at a time is in the tab order (a roving tabindex), so that Tab
// does not walk through every symbol; the arrow keys move between rows.
let focusRow = null;
function setFocusRow(row) {
  if (focusRow) focusRow.tr.tabIndex = -1;
  focusRow = row;
  if (row) row.tr.tabIndex = 0;
}

const visibleRows = () => [...tbody.children].filter((tr) => !tr.hidden);

tbody.addEventListener('focusin', (e) => {
  const tr = e.target.closest('tr');
  const row = tr && rows.get(tr.dataset.symbol);
  if (row && row !== focusRow) setFocusRow(row);
});

tbody.addEventListener('keydown', (e) => {
  const tr = e.target.closest('tr');
  if (!tr || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    e.preventDefault();
    const vis = visibleRows();
    const next = vis[vis.indexOf(tr) + (e.key === 'ArrowDown' ? 1 : -1)];
    if (next) next.focus();
  } else if (e.key === 'Enter' && e.target === tr) {
    // On the link itself, Enter follows it without help.
    const row = rows.get(tr.dataset.symbol);
    if (row) location.assign(row.href);
  }
});

// ---- sparklines -------------------------------------------------------------

let sparkFrame = 0;
function markSpark(row) {
  row.sparkDirty = true;
  if (!sparkFrame) sparkFrame = requestAnimationFrame(drawSparks);
}

function drawSparks() {
  sparkFrame = 0;
  for (const row of rows.values()) {
    if (row.sparkDirty) {
      row.sparkDirty = false;
      drawSpark(row);
    }
  }
}

// The sparkline takes the colour of the change cells beside it, read from
// the stylesheet so that the two cannot drift apart, and again when the
// theme changes (a canvas does not follow CSS by itself).
const SPARK_COLOURS = {};
function readSparkColours() {
  SPARK_COLOURS.up = cssVar('--up', '#3fb950');
  SPARK_COLOURS.down = cssVar('--down', '#ff7b72');
  SPARK_COLOURS.flat = cssVar('--muted', '#9ea7b3');
}
readSparkColours();
onThemeChange(() => {
  readSparkColours();
  for (const row of rows.values()) markSpark(row);
});

function drawSpark(row) {
  const { canvas, spark: points } = row;
  const dir = row.dir || 'flat';
  canvas.dataset.dir = dir;
  canvas.dataset.colour = SPARK_COLOURS[dir];
  const dpr = window.devicePixelRatio || 1;
  const w = SPARK_W;
  const h = SPARK_H;
  if (canvas.width !== Math.round(w * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of points) {
    if (p < lo) lo = p;
    if (p > hi) hi = p;
  }
  const span = hi - lo || 1;
  const pad = 2;
  const x = (i) => pad + (i * (w - 2 * pad)) / (SPARK_POINTS - 1);
  const y = (p) => h - pad - ((p - lo) * (h - 2 * pad)) / span;
  const offset = SPARK_POINTS - points.length; // right-align a short history
  ctx.strokeStyle = SPARK_COLOURS[dir];
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(i + offset), y(p)) : ctx.moveTo(x(i + offset), y(p))));
  ctx.stroke();
}

// ---- the anomaly feed ---------------------------------------------------------

// LOW alerts are hidden by default: they come often and would bury the
// rest. What the filters hide is counted beside them.
const sevFilter = document.getElementById('sev-filter');
const kindFilter = document.getElementById('kind-filter');
const symFilter = document.getElementById('sym-filter');
const hiddenNote = document.getElementById('anomalies-hidden');
const SEV_RANK = { low: 0, medium: 1, high: 2 };
const SEVERITIES = ['low', 'medium', 'high'];

function shownAnomaly(li) {
  return SEV_RANK[li.dataset.severity] >= SEV_RANK[sevFilter.value]
    && (!kindFilter.value || li.dataset.kind === kindFilter.value)
    && (!symFilter.value || li.dataset.symbol === symFilter.value);
}

// Adds value to a filter's options, in order, the first time it is seen.
function noteOption(select, value, label) {
  if (!value) return;
  let before = null;
  for (const o of select.options) {
    if (o.value === value) return;
    if (o.value && o.value > value && !before) before = o;
  }
  select.insertBefore(el('option', { value }, label), before);
}

function filterFeed() {
  const hidden = { low: 0, medium: 0, high: 0 };
  for (const li of feed.children) {
    const show = shownAnomaly(li);
    li.hidden = !show;
    if (!show) hidden[li.dataset.severity]++;
  }
  const parts = SEVERITIES.filter((s) => hidden[s]).map((s) => `${fmtInt(hidden[s])} ${s}`);
  hiddenNote.textContent = parts.length ? `${parts.join(', ')} hidden` : '';
}

sevFilter.addEventListener('change', filterFeed);
kindFilter.addEventListener('change', filterFeed);
symFilter.addEventListener('change', filterFeed);

function addAnomaly(a, atTop, refilter = true) {
  // The first load and the stream can both bring the same anomaly.
  for (const li of feed.children) {
    if (li.dataset.symbol === a.symbol && li.dataset.kind === a.kind && li.dataset.ts === a.ts) return;
  }
  const li = anomalyItem(a);
  noteOption(kindFilter, li.dataset.kind, kindLabel(li.dataset.kind));
  noteOption(symFilter, li.dataset.symbol, li.dataset.symbol);
  if (atTop) feed.prepend(li);
  else feed.append(li);
  while (feed.children.length > MAX_ANOMALIES) feed.lastElementChild.remove();
  feedEmpty.hidden = true;
  if (refilter) filterFeed();
}

// ---- status strip ---------------------------------------------------------------

const tpsEl = document.getElementById('tps');
const ageEl = document.getElementById('age');
const lagEl = document.getElementById('lag');
const clientsEl = document.getElementById('clients');
const strip = document.getElementById('status');
const connEl = document.getElementById('conn-state');

// The server sends a status event every second while the stream is open.
// Without them the strip's values are old: they are greyed, and the age of
// the last tick keeps counting from when it was, on the browser's clock,
// instead of freezing on its last value.
const STATUS_SILENCE = 3000;
let statusAt = 0; // performance.now() of the last status event
let lastTickAt = null; // the last tick's time, ms on the browser's clock

function renderTickAge(age) {
  ageEl.textContent = age == null ? 'none yet' : `${fmtAge(age)} ago`;
  ageEl.classList.toggle('stale', age != null && age > 10);
}

function applyStatus(s) {
  statusAt = performance.now();
  lastTickAt = s.last_tick_age_s == null ? null : Date.now() - s.last_tick_age_s * 1000;
  tpsEl.textContent = fmtDec1(s.ticks_per_s);
  renderTickAge(s.last_tick_age_s);
  lagEl.textContent = s.consumer_lag == null ? '–' : fmtInt(s.consumer_lag);
  clientsEl.textContent = fmtInt(s.clients);
  renderStrip(true);
}

// Once the stream is seen down the values stay old until a new status
// arrives, whatever the dot says meanwhile: it moves on to "down", which
// a database outage shows too with the stream still open.
let stripStale = false;

function renderStrip(fresh = false) {
  const st = connEl.dataset.state;
  if (fresh) stripStale = false;
  else if (st === 'reconnecting' || st === 'closed') stripStale = true;
  else if (statusAt > 0 && performance.now() - statusAt > STATUS_SILENCE) stripStale = true;
  const stale = stripStale;
  strip.classList.toggle('stale', stale);
  strip.dataset.state = stale ? 'disconnected' : 'live';
  ageEl.title = stale ? 'No live updates: counting from the last tick received.' : '';
  if (stale && lastTickAt != null) renderTickAge((Date.now() - lastTickAt) / 1000);
}

const announceEl = document.getElementById('announce');
let announced = '';

// Only a change of state is announced: "live", "reconnecting", "database
// down"…, never the numbers that move every second.
function announce() {
  const text = `Live data: ${connEl.textContent.trim()}`;
  if (connEl.dataset.state === 'connecting' || text === announced) return;
  announced = text;
  announceEl.textContent = text;
}

new MutationObserver(() => {
  renderStrip();
  announce();
}).observe(connEl, { attributes: true, attributeFilter: ['data-state'] });

// ---- loading ------------------------------------------------------------------

// Set while the watchlist could not be read: no rows then means nothing
// about ticks, and "waiting for the first ticks" would be untrue.
let watchlistFailed = false;

function updateEmpty() {
  emptyEl.hidden = !(window.stockpipe.loaded && rows.size === 0 && !watchlistFailed);
}

async function loadSymbols() {
  const quotes = await fetchJSON('/api/symbols');
  for (const q of quotes || []) applyQuote(q);
  sortRows();
  renderAges();
}

async function loadAnomalies() {
  const body = await fetchJSON(`/api/anomalies?limit=${MAX_ANOMALIES}`);
  feed.replaceChildren();
  for (const a of (body && body.anomalies) || []) addAnomaly(a, false, false);
  filterFeed();
  feedEmpty.hidden = feed.children.length > 0;
}

let refreshTimer = 0;
let refreshing = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = 0;
    if (refreshing) return;
    refreshing = loadSymbols()
      .catch((err) => showError(`Could not refresh the watchlist: ${err.message}`))
      .finally(() => { refreshing = null; });
  }, 1000);
}

async function loadAll() {
  const results = await Promise.allSettled([loadSymbols(), loadAnomalies()]);
  const errors = [];
  watchlistFailed = results[0].status === 'rejected';
  updateEmpty();
  if (watchlistFailed) errors.push(`Could not load the watchlist: ${results[0].reason.message}`);
  if (results[1].status === 'rejected') errors.push(`Could not load anomalies: ${results[1].reason.message}`);
  showError(errors.join(' '));
}

// ---- the live stream ---------------------------------------------------------

// Events are collected as they arrive and applied once per animation
// frame: the newest price of each symbol, every candle and anomaly in
// order (the server already sends at most a few prices per symbol per
// second). Until the first load is in they are held, so nothing that
// happens in between is lost. A hidden tab gets no animation frames, so a
// timer applies them there instead, keeping what is held small.
let ready = false;
const prices = new Map(); // symbol → newest tick event
let updates = []; // [apply, data] in arrival order: candles, anomalies, status
let frame = 0;
let hiddenTimer = 0;

function schedule() {
  if (!ready) return;
  if (!frame) frame = requestAnimationFrame(applyUpdates);
  if (document.hidden && !hiddenTimer) hiddenTimer = setTimeout(applyUpdates, 1000);
}

function applyUpdates() {
  cancelAnimationFrame(frame);
  clearTimeout(hiddenTimer);
  frame = 0;
  hiddenTimer = 0;
  if (!prices.size && !updates.length) return;
  window.stockpipe.frames++;
  const list = updates;
  updates = [];
  for (const [fn, data] of list) fn(data);
  // Prices after candles: a candle may start the symbol's day, which a
  // price's change is measured against.
  for (const ev of prices.values()) applyTick(ev);
  prices.clear();
  if (sortDirty && sortKey !== 'symbol') sortRows();
  if (sparkFrame) {
    // Draw in this frame rather than the next.
    cancelAnimationFrame(sparkFrame);
    drawSparks();
  }
}

function received(name, fn) {
  return (data) => {
    window.stockpipe.messages++;
    window.stockpipe.events[name] = (window.stockpipe.events[name] || 0) + 1;
    window.stockpipe.bytes += JSON.stringify(data).length;
    fn(data);
  };
}

const later = (fn) => (data) => {
  updates.push([fn, data]);
  schedule();
};

openStream('/api/stream?ticks=all&candles=1m&anomalies=1&status=1', {
  tick: received('tick', (ev) => {
    prices.set(ev.symbol, ev);
    schedule();
  }),
  candle: received('candle', later(applyCandle)),
  anomaly: received('anomaly', later((a) => addAnomaly(a, true))),
  status: received('status', later(applyStatus)),
  reconnected: () => { loadAll(); },
});

await loadAll();
loadingEl.hidden = true;
window.stockpipe.loaded = true;
ready = true;
applyUpdates();
updateEmpty();
renderAges();
setInterval(renderAges, 1000);
