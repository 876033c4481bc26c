// The overview page: status strip, live watchlist with sparklines, and the
// anomaly feed, all fed by /api/symbols, /api/anomalies and /api/stream.
// The stream is asked for what the page shows only (the latest price of
// each symbol, 1m candles, anomalies, status), and what it brings is
// applied once per animation frame.

// The shared helpers are loaded with this module's own ?v= query so that a
// new release never mixes old and new modules.
const {
  fetchJSON, openStream, showError, el, anomalyItem,
  fmtPrice, fmtChange, fmtVolume, fmtAge, fmtInt, fmtDec1, direction,
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

/** symbol → row state (see makeRow). */
const rows = new Map();

// Read-only hooks for browser tests: messages counts the stream's events
// as they arrive, by name in events; frames counts the animation frames
// that applied some.
window.stockpipe = {
  loaded: false,
  symbols: () => rows.size,
  messages: 0,
  events: {},
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
    volume: el('td', { className: 'num volume' }, '–'),
  };
  const canvas = el('canvas', { className: 'spark', width: SPARK_W, height: SPARK_H, role: 'img' });
  canvas.setAttribute('aria-label', `${symbol} price over the last hour`);
  const tr = el('tr', { dataset: { symbol } },
    el('th', { scope: 'row' }, el('a', { href }, symbol)),
    cells.price, cells.change, cells.pct,
    el('td', { className: 'col-spark' }, canvas),
    cells.volume,
  );
  const row = {
    symbol, tr, cells, canvas,
    last: null, dayOpen: null, volume: null,
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
  // Keep rows sorted by symbol.
  let before = null;
  for (const [s, r] of rows) {
    if (s > symbol && (!before || s < before.symbol)) before = r;
  }
  tbody.insertBefore(tr, before ? before.tr : null);
  rows.set(symbol, row);
  updateEmpty();
  return row;
}

function applyQuote(q) {
  const row = rows.get(q.symbol) || makeRow(q.symbol);
  row.dayOpen = q.day_open;
  row.volume = q.volume;
  row.bucket = q.bucket ? unix(q.bucket) : null;
  row.loadedBucket = row.bucket;
  row.bucketVols = new Map(row.bucket == null ? [] : [[row.bucket, q.bucket_volume || 0]]);
  row.spark = Array.isArray(q.spark) ? q.spark.slice(-SPARK_POINTS) : [];
  row.sparkTimes = row.spark.map((_, i) => (i === row.spark.length - 1 ? row.bucket : null));
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
  for (const [cell, text] of [[row.cells.change, fmtChange(change)], [row.cells.pct, fmtChange(pct, '%')]]) {
    cell.textContent = text;
    cell.classList.remove('up', 'down', 'flat');
    if (change != null) cell.classList.add(direction(change));
  }
}

function renderVolume(row) {
  row.cells.volume.textContent = fmtVolume(row.volume);
  row.cells.volume.title = row.volume == null ? '' : fmtInt(row.volume);
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
  setPrice(row, ev.price, true);
}

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
      drawSpark(row.canvas, row.spark);
    }
  }
}

function drawSpark(canvas, points) {
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
  const up = points[points.length - 1] >= points[0];
  ctx.strokeStyle = up ? '#3fb950' : '#f85149';
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(i + offset), y(p)) : ctx.moveTo(x(i + offset), y(p))));
  ctx.stroke();
}

// ---- the anomaly feed ---------------------------------------------------------

function addAnomaly(a, atTop) {
  // The first load and the stream can both bring the same anomaly.
  for (const li of feed.children) {
    if (li.dataset.symbol === a.symbol && li.dataset.kind === a.kind && li.dataset.ts === a.ts) return;
  }
  const li = anomalyItem(a);
  if (atTop) feed.prepend(li);
  else feed.append(li);
  while (feed.children.length > MAX_ANOMALIES) feed.lastElementChild.remove();
  feedEmpty.hidden = true;
}

// ---- status strip ---------------------------------------------------------------

const tpsEl = document.getElementById('tps');
const ageEl = document.getElementById('age');
const lagEl = document.getElementById('lag');
const clientsEl = document.getElementById('clients');

function applyStatus(s) {
  tpsEl.textContent = fmtDec1(s.ticks_per_s);
  ageEl.textContent = s.last_tick_age_s == null ? 'none yet' : `${fmtAge(s.last_tick_age_s)} ago`;
  ageEl.classList.toggle('stale', s.last_tick_age_s != null && s.last_tick_age_s > 10);
  lagEl.textContent = s.consumer_lag == null ? '–' : fmtInt(s.consumer_lag);
  clientsEl.textContent = fmtInt(s.clients);
}

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
}

async function loadAnomalies() {
  const body = await fetchJSON(`/api/anomalies?limit=${MAX_ANOMALIES}`);
  feed.replaceChildren();
  for (const a of (body && body.anomalies) || []) addAnomaly(a, false);
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
