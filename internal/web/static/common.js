// Shared helpers for the dashboard pages: JSON fetching, the live event
// stream, and number/time formatting.

// ---- colour theme ----------------------------------------------------------

/**
 * The value of the CSS custom property name (say "--chart-bg") in the
 * colour theme in effect, as app.css writes it, or fallback when unset.
 */
export function cssVar(name, fallback = '') {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/**
 * Calls fn(theme) after the colour theme changes ("light" or "dark"), by
 * the header's switch, another tab or the system. Colours drawn by a
 * script (canvas charts) must be read again then; CSS follows by itself.
 */
export function onThemeChange(fn) {
  document.addEventListener('stockpipe:theme', (ev) => fn(ev.detail && ev.detail.theme));
}

/** An Error carrying the HTTP status of a failed API call (0: no response). */
export class APIError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'APIError';
    this.status = status;
  }
}

/**
 * Fetches url and returns its parsed JSON body. A non-2xx answer throws an
 * APIError with the server's {"error": "..."} message when it sent one.
 */
export async function fetchJSON(url, { signal } = {}) {
  let res;
  try {
    res = await fetch(url, { headers: { Accept: 'application/json' }, signal });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new APIError(`network error: ${err.message}`, 0);
  }
  const text = await res.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      if (res.ok) throw new APIError(`unreadable answer from ${url}`, res.status);
    }
  }
  if (!res.ok) {
    const msg = body && typeof body.error === 'string' && body.error
      ? body.error
      : `${res.status} ${res.statusText}`.trim();
    throw new APIError(msg, res.status);
  }
  return body;
}

/** How often a page asks /api/status whether the server's components answer. */
const STATUS_EVERY = 5000;

/**
 * Opens a Server-Sent Events stream at path. handlers maps event names
 * ("tick", "candle", ...) to functions called with the parsed JSON data;
 * handlers.reconnected (optional) runs when the stream opens again after a
 * failure, or when the server's components answer again after one did not,
 * so the page can re-read what it missed or failed to load. The #conn
 * banner shows while the connection is down. #conn-state (if present) is
 * the status dot: green only while the stream is open and /api/status
 * reports the database, the broker and the server's other checks answering
 * (polled every few seconds and whenever the stream fails), red or amber
 * with the reason otherwise. EventSource retries by itself; when the
 * browser gives up (for example on a non-2xx answer) the stream is reopened
 * here with a growing delay. Returns { close(), reopen(path, onOpen) }:
 * reopen swaps the stream for one at another path (a page asking for other
 * events) and calls onOpen (default handlers.reconnected) once it is open,
 * since what happened while neither was open was not sent.
 */
export function openStream(path, handlers) {
  const banner = document.getElementById('conn');
  let es = null;
  let failed = false;
  let closed = false;
  let retryDelay = 1000;
  let retryTimer = 0;
  let onReopen = null; // set by reopen until the new stream opens

  let streamOpen = false;
  let status = null; // the last /api/status answer
  let statusErr = null; // why the last poll failed, if it did
  let statusTimer = 0;
  let polling = false;
  // Set while something was down: what the page shows may be missing or
  // old, so it reloads once everything answers again.
  let stale = false;

  const reload = () => {
    stale = false;
    if (handlers.reconnected) handlers.reconnected();
  };
  const render = () => {
    if (!closed) setConnState(...connHealth(streamOpen, status, statusErr));
  };
  const poll = async () => {
    if (closed || polling) return; // an answer is on its way
    clearTimeout(statusTimer);
    polling = true;
    try {
      status = await fetchJSON('/api/status');
      statusErr = null;
    } catch (err) {
      status = null;
      statusErr = err;
    } finally {
      polling = false;
    }
    if (closed) return;
    if (!status || status.ok !== true) stale = true;
    else if (stale && streamOpen) reload();
    render();
    statusTimer = setTimeout(poll, STATUS_EVERY);
  };

  const connect = () => {
    es = new EventSource(path);
    es.addEventListener('open', () => {
      retryDelay = 1000;
      streamOpen = true;
      if (banner) banner.hidden = true;
      if (onReopen) {
        const fn = onReopen;
        onReopen = null;
        failed = false;
        fn();
      } else if (failed) {
        failed = false;
        reload();
      }
      render();
      poll();
    });
    es.addEventListener('error', () => {
      if (closed) return;
      failed = true;
      streamOpen = false;
      render();
      poll();
      if (banner) banner.hidden = false;
      if (es.readyState === EventSource.CLOSED) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 30000);
      }
    });
    for (const [name, fn] of Object.entries(handlers)) {
      if (name === 'reconnected') continue;
      es.addEventListener(name, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          console.warn(`stream: unreadable ${name} event`, ev.data);
          return;
        }
        fn(data);
      });
    }
  };

  connect();
  poll();
  return {
    reopen(newPath, onOpen = handlers.reconnected) {
      if (closed) return;
      path = newPath;
      onReopen = onOpen || (() => {});
      clearTimeout(retryTimer);
      retryDelay = 1000;
      if (es) es.close();
      connect();
    },
    close() {
      closed = true;
      clearTimeout(retryTimer);
      clearTimeout(statusTimer);
      if (es) es.close();
      if (banner) banner.hidden = true;
      setConnState('closed', 'not connected', '');
    },
  };
}

const failing = (v) => typeof v === 'string' && v !== '' && v !== 'ok';

/**
 * The status dot's [state, label, detail] for the stream's state and the
 * last /api/status answer (or the error fetching it). A database that does
 * not answer is red whatever the stream does: the page can neither load
 * nor refresh anything.
 */
function connHealth(streamOpen, status, statusErr) {
  if (statusErr) return ['down', 'server unreachable', statusErr.message];
  if (status && failing(status.database)) return ['down', 'database unreachable', status.database];
  if (!streamOpen) {
    return status ? ['reconnecting', 'reconnecting…', 'The live stream is down; reconnecting.'] : ['connecting', 'connecting…', ''];
  }
  if (!status) return ['connecting', 'connecting…', ''];
  if (failing(status.broker)) return ['degraded', 'broker unreachable', status.broker];
  if (failing(status.live_updates)) return ['degraded', 'live updates paused', status.live_updates];
  for (const [name, v] of Object.entries(status.checks || {})) {
    if (failing(v)) return ['degraded', `${name} not ready`, v];
  }
  if (status.ok !== true) return ['degraded', 'not ready', ''];
  return ['live', 'live', 'The stream is open and the server reports every component answering.'];
}

function setConnState(state, label, detail) {
  const el = document.getElementById('conn-state');
  if (!el) return;
  el.dataset.state = state;
  el.textContent = label;
  el.title = detail || '';
}

/** Shows message in the #error box, or hides the box when message is empty. */
export function showError(message) {
  const box = document.getElementById('error');
  if (!box) return;
  box.textContent = message || '';
  box.hidden = !message;
}

// ---- formatting ----------------------------------------------------------

// Numbers use one fixed style (a "." decimal point, "," grouping) so tables
// match the chart's axes; prices are never grouped (189.23, 1234.50).
const NUM_LOCALE = 'en-US';
const priceFmt2 = new Intl.NumberFormat(NUM_LOCALE, { minimumFractionDigits: 2, maximumFractionDigits: 2, useGrouping: false });
const priceFmt4 = new Intl.NumberFormat(NUM_LOCALE, { minimumFractionDigits: 2, maximumFractionDigits: 4, useGrouping: false });
const intFmt = new Intl.NumberFormat(NUM_LOCALE, { maximumFractionDigits: 0 });
const oneDecFmt = new Intl.NumberFormat(NUM_LOCALE, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const compactFmt = new Intl.NumberFormat(NUM_LOCALE, { notation: 'compact', maximumFractionDigits: 1 });

/** A price: two decimals, up to four below 1, no grouping. "–" for a missing value. */
export function fmtPrice(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  return (Math.abs(v) < 1 ? priceFmt4 : priceFmt2).format(v);
}

/** A whole number with grouping; "–" for a missing value. */
export function fmtInt(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  return intFmt.format(v);
}

/** A volume: grouped below a million, compact (1.2M) above. */
export function fmtVolume(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  return Math.abs(v) >= 1e6 ? compactFmt.format(v) : intFmt.format(v);
}

/** One decimal place; "–" for a missing value. */
export function fmtDec1(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  return oneDecFmt.format(v);
}

/** A signed change with an arrow so the direction does not rely on colour. */
export function fmtChange(v, suffix = '') {
  if (v == null || !Number.isFinite(v)) return '–';
  const body = (Math.abs(v) < 1 && suffix === '' ? priceFmt4 : priceFmt2).format(Math.abs(v));
  if (v > 0) return `▲ +${body}${suffix}`;
  if (v < 0) return `▼ −${body}${suffix}`;
  return `${body}${suffix}`;
}

/** "up", "down" or "flat" for a signed number. */
export function direction(v) {
  return v > 0 ? 'up' : v < 0 ? 'down' : 'flat';
}

/** A duration in seconds, short: 0.12 s, 4.3 s, 2 min 5 s, 1 h 20 min. */
export function fmtAge(s) {
  if (s == null || !Number.isFinite(s)) return '–';
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const timeOpts = { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
const timeFmts = new Map();
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});

// Formatters are costly to build and a page formats thousands of times,
// so each zone's is kept. An unknown zone falls back to the reader's.
function zoned(cache, locale, opts, timeZone) {
  const key = timeZone || '';
  let f = cache.get(key);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat(locale, timeZone ? { ...opts, timeZone } : opts);
    } catch {
      f = new Intl.DateTimeFormat(locale, opts);
    }
    cache.set(key, f);
  }
  return f;
}

/**
 * The wall-clock time of an RFC 3339 string or Date, with milliseconds if
 * asked, in timeZone (an IANA name; the reader's own zone when omitted).
 */
export function fmtTime(ts, withMillis = false, timeZone = undefined) {
  const d = ts instanceof Date ? ts : new Date(ts);
  if (Number.isNaN(d.getTime())) return '–';
  const base = zoned(timeFmts, undefined, timeOpts, timeZone).format(d);
  return withMillis ? `${base}.${String(d.getMilliseconds()).padStart(3, '0')}` : base;
}

const stampOpts = {
  year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  hourCycle: 'h23', timeZoneName: 'short',
};
const stampFmts = new Map();

/**
 * A moment with its date and zone, in the reader's time zone like the
 * charts unless timeZone (an IANA name) says otherwise: "2026-11-02
 * 10:31:05 EST" (".123" before the zone if asked). A time of day alone is
 * ambiguous once a feed spans midnight or a replay shows another day.
 */
export function fmtStamp(ts, withMillis = false, timeZone = undefined) {
  const d = ts instanceof Date ? ts : new Date(ts);
  if (Number.isNaN(d.getTime())) return '–';
  const p = {};
  for (const { type, value } of zoned(stampFmts, 'en-US', stampOpts, timeZone).formatToParts(d)) p[type] = value;
  const ms = withMillis ? `.${String(d.getMilliseconds()).padStart(3, '0')}` : '';
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}${ms} ${p.timeZoneName}`;
}

/** The local date and time of an RFC 3339 string or Date. */
export function fmtDateTime(ts) {
  const d = ts instanceof Date ? ts : new Date(ts);
  if (Number.isNaN(d.getTime())) return '–';
  return dateTimeFmt.format(d);
}

/** Unix seconds as RFC 3339 in UTC without fractional seconds. */
export function isoFromUnix(sec) {
  return new Date(sec * 1000).toISOString().replace('.000Z', 'Z');
}

/** The link to a symbol's page centred on an anomaly's moment. */
export function anomalyHref(a, interval = '1m', range = '1h') {
  const q = new URLSearchParams({ at: a.ts, interval, range });
  return `/symbol/${encodeURIComponent(a.symbol)}?${q}`;
}

// Abbreviations a reader knows in capitals, wherever they fall in a kind.
const KIND_WORDS = { vwap: 'VWAP', rsi: 'RSI', sma: 'SMA', ema: 'EMA', seq: 'sequence' };

/**
 * A human label for an anomaly kind, as a sentence begins: "price_jump" →
 * "Price jump", "vwap_deviation" → "VWAP deviation".
 */
export function kindLabel(kind) {
  const words = String(kind || '').split('_').filter(Boolean).map((w) => KIND_WORDS[w] ?? w);
  const text = words.join(' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// Kinds whose value is a size, not a move: they have no direction.
const UNDIRECTED_KINDS = new Set(['volume_burst', 'spread_blowout', 'seq_gap', 'stale']);

/**
 * Which way an anomaly says the price went: "up", "down", or null for a
 * kind that measures no move (a volume burst, a wide spread, a gap). The
 * signed kinds (price_jump, band_break, vwap_deviation) carry it in the
 * value's sign; the detail's wording ("rose", "above the upper") decides
 * when the value does not.
 */
export function anomalyDirection(a) {
  if (!a || UNDIRECTED_KINDS.has(a.kind)) return null;
  if (typeof a.value === 'number' && Number.isFinite(a.value) && a.value !== 0) return a.value > 0 ? 'up' : 'down';
  const d = String(a.detail || '');
  const up = /\b(rose|above)\b/.test(d);
  const down = /\b(fell|below)\b/.test(d);
  return up === down ? null : up ? 'up' : 'down';
}

/** Builds an element: el('td', {className: 'num'}, 'text', child, ...). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c == null) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/**
 * Renders one anomaly as an <li data-kind=… data-severity=…>: time (in
 * timeZone, an IANA name, or the reader's zone), a text severity label, a
 * link to the symbol's chart at that moment, the detail.
 */
export function anomalyItem(a, { showSymbol = true, interval = '1m', range = '1h', timeZone = undefined } = {}) {
  const sev = ['low', 'medium', 'high'].includes(a.severity) ? a.severity : 'low';
  const linkText = showSymbol ? `${a.symbol} ${kindLabel(a.kind)}` : kindLabel(a.kind);
  return el('li', { className: `anomaly sev-${sev}`, dataset: { kind: a.kind, severity: sev, symbol: a.symbol, ts: a.ts } },
    el('span', { className: `sev-badge sev-${sev}` }, sev),
    ' ',
    el('time', { className: 'anomaly-time', dateTime: a.ts, title: `${a.ts} (UTC)` }, fmtStamp(a.ts, false, timeZone)),
    ' ',
    el('a', { href: anomalyHref(a, interval, range), className: 'anomaly-link' }, linkText),
    el('span', { className: 'anomaly-detail' }, a.detail || ''),
  );
}

/** True for a finite number. */
export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

const dec1Fmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

/** A duration in milliseconds, short: 350 ms, 4.2 s, 2 min 5 s, 1 h 20 min. */
export function fmtDuration(ms) {
  if (!isNum(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${dec1Fmt.format(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** The states of a DAG run. */
export const RUN_STATES = new Set(['queued', 'running', 'success', 'failed']);

const partsFmts = new Map();
/** The wall-clock fields of a moment in time zone tz (UTC if tz is unknown). */
export function wallClock(date, tz) {
  let f = partsFmts.get(tz);
  if (!f) {
    const opts = { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    try {
      f = new Intl.DateTimeFormat('en-CA', { ...opts, timeZone: tz || 'UTC' });
    } catch {
      f = new Intl.DateTimeFormat('en-CA', { ...opts, timeZone: 'UTC' });
    }
    partsFmts.set(tz, f);
  }
  const p = {};
  for (const { type, value } of f.formatToParts(date)) p[type] = value;
  return p;
}

/**
 * A run's logical date as the scheduler means it: the date in the DAG's
 * time zone, with the time when it is not midnight (sub-daily schedules).
 */
export function fmtLogical(ts, tz) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '–';
  const p = wallClock(d, tz);
  const day = `${p.year}-${p.month}-${p.day}`;
  return p.hour === '00' && p.minute === '00' ? day : `${day} ${p.hour}:${p.minute}`;
}
