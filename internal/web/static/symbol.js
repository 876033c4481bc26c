// The symbol page: candlestick chart with volume, indicator overlays, an
// RSI pane and anomaly markers (TradingView Lightweight Charts™, loaded as
// the global LightweightCharts), plus the latest trades, all live from
// /api/stream?symbol=SYM, asked for the symbol's trades, anomalies and the
// candles of the interval shown (see streamPath).

// The shared helpers are loaded with this module's own ?v= query so that a
// new release never mixes old and new modules.
const {
  fetchJSON, openStream, showError, el, anomalyItem, kindLabel, direction, anomalyDirection,
  fmtPrice, fmtVolume, fmtInt, fmtDec1, fmtTime, fmtStamp, fmtChange, isoFromUnix,
  cssVar, onThemeChange,
} = await import(`./common.js${new URL(import.meta.url).search}`);

const INTERVALS = { '1m': 60, '5m': 300, '1d': 86400 };
const RANGES = { '1h': 3600, '1d': 86400, '5d': 5 * 86400, all: null };
const MAX_CANDLES = 10000;
const MAX_TRADES = 50;
const MAX_ANOMALIES = 100;
const MAX_BAR_SPACING = 40; // px
// The RSI(14) of a candle needs the change over the 14 before it.
const RSI_NEEDS = 15;

// The chart draws on a canvas, out of the stylesheet's reach: its colours
// are read from app.css's theme variables (readColors) and read again when
// the theme changes (applyTheme). Each name's CSS variable and the dark
// theme's value, for a stylesheet that failed to load.
const COLOR_VARS = {
  bg: ['--chart-bg', '#0d1117'],
  up: ['--chart-up', '#3fb950'],
  down: ['--chart-down', '#f85149'],
  volUp: ['--chart-vol-up', 'rgba(63, 185, 80, 0.40)'],
  volDown: ['--chart-vol-down', 'rgba(248, 81, 73, 0.40)'],
  text: ['--chart-text', '#c9d1d9'],
  grid: ['--chart-grid', '#21262d'],
  border: ['--chart-border', '#30363d'],
  crosshair: ['--chart-crosshair', '#8b949e'],
  crosshairLabel: ['--chart-crosshair-label', '#30363d'],
  rsi: ['--chart-rsi', '#d2a8ff'],
  guide: ['--chart-guide', '#8b949e'],
};
const COLORS = {
  // Up bodies are hollow (drawn in the background) and down bodies
  // filled, so the two differ in shape as well as hue.
  hollow: 'rgba(0, 0, 0, 0)',
  sev: {},
};

// Indicator overlays: checkbox key → lines, each a candle field or, for
// `session`, the session VWAP computed here from the candles.
// The colours are app.css's --ind-<key> (the legend names each line in
// its colour); `color` is the dark theme's, until readColors.
const INDICATORS = {
  sma5: { label: 'SMA 5', color: '#58a6ff', lines: [{ field: 'sma_5' }] },
  sma20: { label: 'SMA 20', color: '#f2cc60', lines: [{ field: 'sma_20' }] },
  ema12: { label: 'EMA 12', color: '#56d4dd', lines: [{ field: 'ema_12' }] },
  ema26: { label: 'EMA 26', color: '#ff9bce', lines: [{ field: 'ema_26' }] },
  bb: { label: 'BB', color: '#a5a5ff', lines: [{ field: 'bb_upper' }, { field: 'bb_lower' }] },
  // The session VWAP, not each bar's own: it is what the vwap_deviation
  // detector measures against and what its explanations quote. (The key
  // stays 'vwap' so that a saved choice carries over.)
  vwap: { label: 'Session VWAP', color: '#db61a2', lines: [{ session: true }] },
};

function readColors() {
  for (const [name, [v, dflt]] of Object.entries(COLOR_VARS)) COLORS[name] = cssVar(v, COLORS[name] || dflt);
  for (const [sev, dflt] of [['high', '#ff7b72'], ['medium', '#f0883e'], ['low', '#e3b341']]) {
    COLORS.sev[sev] = cssVar(`--sev-${sev}`, COLORS.sev[sev] || dflt);
  }
  for (const [key, ind] of Object.entries(INDICATORS)) ind.color = cssVar(`--ind-${key}`, ind.color);
}
readColors();

// Where the page's times are read. The exchange's zone is the default: a
// session reads 09:30–16:00 wherever the reader is.
const ZONES = {
  exchange: { tz: 'America/New_York', abbr: 'ET', place: 'New York' },
  utc: { tz: 'UTC', abbr: 'UTC', place: 'UTC' },
  local: { tz: undefined, abbr: '', place: 'your time zone' },
};
const EXCHANGE_TZ = ZONES.exchange.tz;

const body = document.body.dataset;
const symbol = body.symbol || decodeURIComponent(location.pathname.split('/').pop() || '');
const state = {
  interval: Object.hasOwn(INTERVALS, body.interval) ? body.interval : '1m',
  range: Object.hasOwn(RANGES, body.range) ? body.range : '1d',
  at: body.at && !Number.isNaN(Date.parse(body.at)) ? body.at : '',
  indicators: new Set(loadIndicatorChoice()),
  zone: loadZoneChoice(),
};

const chartEl = document.getElementById('chart');
const legendEl = document.getElementById('legend');
const tipEl = document.getElementById('marker-tip');
const emptyEl = document.getElementById('empty');
const chartNoteEl = document.getElementById('chart-note');
const tradesEl = document.getElementById('trades');
const lastPriceEl = document.getElementById('last-price');
const lastChangeEl = document.getElementById('last-change');
const rsiNoteEl = document.getElementById('rsi-note');
const csvLink = document.getElementById('csv');
const symAnomaliesEl = document.getElementById('sym-anomalies');
const symAnomaliesEmpty = document.getElementById('sym-anomalies-empty');
const zoneSelect = document.getElementById('zone');
const zoneLabelEl = document.getElementById('zone-label');
const tradesZoneEl = document.getElementById('trades-zone');
const readoutEl = document.getElementById('bar-readout');

// Data behind the chart: candle rows by bucket time (unix seconds), times ascending.
let byTime = new Map();
let times = [];
let anomalies = []; // as from /api/anomalies, any order
let markersByTime = new Map();
// Session VWAP sums by bar time: {pv: Σ vwap·volume, v: Σ volume} over the
// bars of the bar's New York day up to and including it.
let sessionSums = new Map();
// The same sums over the bars of the first shown day that lie before the
// shown range ({day, pv, v}), read with it; null when there are none.
let sessionBase = null;
let crosshairActive = false;
// The bar chosen with the arrow keys, null when none is.
let kbTime = null;
let rsiSeen = false; // some candle shown has an RSI value

// Read-only hooks for browser tests.
window.stockpipe = {
  candleCount: () => (candles ? candles.data().length : 0),
  lastCandle: () => {
    const t = times[times.length - 1];
    return t == null ? null : { ...byTime.get(t), time: t };
  },
  markerCount: () => (markers ? markers.markers().length : 0),
  candle: (t) => byTime.get(t) ?? null,
  markerTimes: () => (markers ? markers.markers().map((m) => m.time) : []),
  markers: () => (markers ? markers.markers().map((m) => ({ ...m })) : []),
  candleOptions: () => (candles ? { ...candles.options() } : null),
  lineColor: (key) => (lineSeries[key] ? lineSeries[key][0].options().color : null),
  chartBackground: () => (chart ? chart.options().layout.background.color : null),
  chartTextColor: () => (chart ? chart.options().layout.textColor : null),
  volumeColors: () => (volume ? volume.data().map((d) => d.color) : []),
  // The chart's own formatters, as it labels the crosshair and the axis.
  crosshairLabel: (t) => chart.options().localization.timeFormatter(t),
  tickLabel: (t, type) => chart.options().timeScale.tickMarkFormatter(t, type),
  selectedTime: () => kbTime,
  // The value an indicator's first line has at bar time t, as drawn.
  lineValue: (key, t) => {
    const p = lineSeries[key] && lineSeries[key][0].data().find((d) => d.time === t);
    return p && Number.isFinite(p.value) ? p.value : null;
  },
  rsiPaneRect: () => {
    const pane = chart && chart.panes()[1];
    const e = pane && pane.getHTMLElement();
    if (!e) return null;
    const r = e.getBoundingClientRect();
    return { top: r.top, bottom: r.bottom, left: r.left, right: r.right };
  },
  // The drawn distance between bars: the chart's width over the bars it shows.
  barSpacing: () => {
    const ts = chart && chart.timeScale();
    const r = ts && ts.getVisibleLogicalRange();
    return r && r.to > r.from ? ts.width() / (r.to - r.from) : null;
  },
  tradesPaused: () => tradePause.paused,
  tradesHeld: () => tradePause.count,
  firstTradeSeq: () => (tradesEl.firstElementChild ? Number(tradesEl.firstElementChild.dataset.seq) : null),
  symbols: () => [...knownSymbols],
  interval: state.interval,
  loaded: false,
};

// ---- the chart ------------------------------------------------------------------

const LWC = window.LightweightCharts;
let chart = null;
let candles = null;
let volume = null;
let rsi = null;
let markers = null;
const lineSeries = {}; // indicator key → [series]

// Candle times are UTC bucket starts. Intraday times are shown in the
// chosen zone (state.zone); daily candles, which begin at midnight New
// York, by their New York date, which is their trading date in any zone.
const dateOpts = { month: 'short', day: 'numeric' };
const clockOpts = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
const formatters = new Map();
const zoneTz = () => ZONES[state.zone].tz;
function fmtWith(opts, sec) {
  const tz = state.interval === '1d' ? EXCHANGE_TZ : zoneTz();
  const key = JSON.stringify(opts) + (tz || '');
  if (!formatters.has(key)) formatters.set(key, new Intl.DateTimeFormat(undefined, tz ? { ...opts, timeZone: tz } : opts));
  return formatters.get(key).format(new Date(sec * 1000));
}

// The chart reads these through new closures each time, so that applying
// them after a change of zone redraws the axis.
const chartTimeOptions = () => ({
  timeScale: { tickMarkFormatter: (t, type) => fmtTick(t, type) },
  localization: { timeFormatter: (t) => fmtBarTime(t) },
});

/** A crosshair or legend label for a bar time. */
function fmtBarTime(sec) {
  return state.interval === '1d'
    ? fmtWith({ year: 'numeric', ...dateOpts }, sec)
    : fmtWith({ ...dateOpts, ...clockOpts }, sec);
}

/** A time-axis tick label; type is LightweightCharts.TickMarkType. */
function fmtTick(sec, type) {
  if (type === 0) return fmtWith({ year: 'numeric' }, sec);
  if (type === 1) return fmtWith({ month: 'short' }, sec);
  if (type === 2 || state.interval === '1d') return fmtWith(dateOpts, sec);
  return fmtWith(clockOpts, sec);
}

// The chart's and the candles' options that carry colours, for
// createChart and applyTheme.
const chartColorOptions = () => ({
  layout: {
    background: { type: LWC.ColorType.Solid, color: COLORS.bg },
    textColor: COLORS.text,
    panes: { separatorColor: COLORS.border },
  },
  grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
  crosshair: {
    vertLine: { color: COLORS.crosshair, labelBackgroundColor: COLORS.crosshairLabel },
    horzLine: { color: COLORS.crosshair, labelBackgroundColor: COLORS.crosshairLabel },
  },
  rightPriceScale: { borderColor: COLORS.border },
  timeScale: { borderColor: COLORS.border },
});
const candleColorOptions = () => ({
  upColor: COLORS.hollow, downColor: COLORS.down,
  borderUpColor: COLORS.up, borderDownColor: COLORS.down,
  wickUpColor: COLORS.up, wickDownColor: COLORS.down,
});
let rsiGuides = [];

function createChart() {
  const colors = chartColorOptions();
  chart = LWC.createChart(chartEl, {
    autoSize: true,
    layout: {
      ...colors.layout,
      fontFamily: getComputedStyle(document.body).fontFamily,
      attributionLogo: false, // attribution is a visible link under the chart
    },
    grid: colors.grid,
    crosshair: { mode: LWC.CrosshairMode.Normal, ...colors.crosshair },
    rightPriceScale: colors.rightPriceScale,
    timeScale: {
      ...colors.timeScale,
      timeVisible: true,
      secondsVisible: false,
      // fitContent spreads a handful of bars over the whole width: one
      // daily candle became a slab hundreds of pixels wide.
      maxBarSpacing: MAX_BAR_SPACING,
      ...chartTimeOptions().timeScale,
    },
    localization: chartTimeOptions().localization,
  });

  candles = chart.addSeries(LWC.CandlestickSeries, {
    ...candleColorOptions(),
    borderVisible: true,
    priceScaleId: 'right',
  });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.16, bottom: 0.25 } });

  volume = chart.addSeries(LWC.HistogramSeries, {
    priceScaleId: 'volume', priceFormat: { type: 'volume' },
    lastValueVisible: false, priceLineVisible: false,
  });
  volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

  for (const [key, ind] of Object.entries(INDICATORS)) {
    lineSeries[key] = ind.lines.map(() => chart.addSeries(LWC.LineSeries, {
      color: ind.color, lineWidth: key === 'bb' ? 1 : 2,
      lineStyle: key === 'bb' ? LWC.LineStyle.Dashed : LWC.LineStyle.Solid,
      priceLineVisible: false, lastValueVisible: false, crosshairMarkerVisible: false,
      visible: state.indicators.has(key),
    }));
  }

  rsi = chart.addSeries(LWC.LineSeries, {
    color: COLORS.rsi, lineWidth: 1.5, priceLineVisible: false, lastValueVisible: true,
    priceFormat: { type: 'price', precision: 1, minMove: 0.1 },
    autoscaleInfoProvider: () => ({ priceRange: { minValue: 0, maxValue: 100 } }),
  }, 1);
  rsiGuides = [30, 70].map((price) => rsi.createPriceLine({
    price, color: COLORS.guide, lineWidth: 1, lineStyle: LWC.LineStyle.Dashed,
    axisLabelVisible: true, title: '',
  }));
  const panes = chart.panes();
  if (panes[0]) panes[0].setStretchFactor(3);
  if (panes[1]) panes[1].setStretchFactor(1);

  markers = LWC.createSeriesMarkers(candles, []);
  chart.subscribeCrosshairMove(onCrosshair);
}

// Repaints the chart in the theme now in effect. The volume bars and the
// markers carry their colours in their data, so those are set again.
function applyTheme() {
  readColors();
  if (!chart) return;
  chart.applyOptions(chartColorOptions());
  candles.applyOptions(candleColorOptions());
  for (const [key, ind] of Object.entries(INDICATORS)) {
    for (const line of lineSeries[key]) line.applyOptions({ color: ind.color });
  }
  rsi.applyOptions({ color: COLORS.rsi });
  for (const guide of rsiGuides) guide.applyOptions({ color: COLORS.guide });
  volume.setData(times.map((t) => barsOf(byTime.get(t)).volume));
  refreshMarkers();
}

const num = (v) => (v == null || !Number.isFinite(v) ? null : v);

function barsOf(c) {
  const up = c.close >= c.open;
  return {
    candle: { time: c.t, open: c.open, high: c.high, low: c.low, close: c.close },
    volume: { time: c.t, value: c.volume, color: up ? COLORS.volUp : COLORS.volDown },
  };
}

// A line point, or whitespace where the indicator is not defined yet.
function linePoint(c, field) {
  const v = num(c[field]);
  return v == null ? { time: c.t } : { time: c.t, value: v };
}

// ---- the session VWAP ------------------------------------------------------------

// The detector's session is the New York calendar day (reset at New York
// midnight, see sessionEnd in internal/analytics), so the line restarts
// with each New York day's first bar: Σ(bar vwap × volume) / Σ volume over
// that day's bars up to this one. Each bar's vwap is Σ price·size / Σ size
// over its trades, so this is Σ price·size / Σ size over the day's trades
// up to the bar's end: the detector's number at that moment.
function barSums(c) {
  const w = num(c.vwap);
  return w == null || w === 0 || !(c.volume > 0) ? { pv: 0, v: 0 } : { pv: w * c.volume, v: c.volume };
}

function sessionSumsOf(bars) {
  const s = { pv: 0, v: 0 };
  for (const c of bars) {
    const b = barSums(c);
    s.pv += b.pv;
    s.v += b.v;
  }
  return s;
}

// Recomputes the sums from bar index i to the end of that bar's day (later
// days do not depend on it) and returns the index after the last one.
function recomputeSession(i) {
  const first = dayOfBar(times[i]);
  let j = i;
  for (; j < times.length; j++) {
    const day = dayOfBar(times[j]);
    if (j > i && day !== first) break;
    let prev = { pv: 0, v: 0 };
    if (j > 0 && dayOfBar(times[j - 1]) === day) prev = sessionSums.get(times[j - 1]);
    else if (sessionBase && sessionBase.day === day) prev = sessionBase;
    const b = barSums(byTime.get(times[j]));
    sessionSums.set(times[j], { pv: prev.pv + b.pv, v: prev.v + b.v });
  }
  return j;
}

function sessionPoint(t) {
  const s = sessionSums.get(t);
  return s && s.v > 0 ? { time: t, value: s.pv / s.v } : { time: t };
}

function pointOf(c, line) {
  return line.session ? sessionPoint(c.t) : linePoint(c, line.field);
}

// The New York date of a bar time, memoised per hour: New York's offsets
// are whole hours, so its days begin on the hour.
const dayOfHour = new Map();
function dayOfBar(t) {
  const h = Math.floor(t / 3600);
  let d = dayOfHour.get(h);
  if (d === undefined) {
    d = dayOf(h * 3600);
    if (dayOfHour.size > 100000) dayOfHour.clear();
    dayOfHour.set(h, d);
  }
  return d;
}

/**
 * Unix seconds of midnight New York on the New York date of sec: where 1d
 * candles begin, and sessions. New York is UTC−5 or UTC−4 and changes at
 * 02:00, so its midnight is 04:00 or 05:00 UTC of the same date.
 */
function nyMidnight(sec) {
  const day = dayOfBar(sec);
  const [y, m, d] = day.split('-').map(Number);
  const utc = Date.UTC(y, m - 1, d) / 1000;
  for (const hours of [4, 5]) {
    const t = utc + hours * 3600;
    if (dayOfBar(t) === day && dayOfBar(t - 3600) !== day) return t;
  }
  return utc + 5 * 3600; // not reached
}

// rows: the candles to show; base: sums of the first shown day's bars
// before them (see sessionBase).
function setAllData(rows, base = null) {
  byTime = new Map();
  times = [];
  for (const c of rows) {
    if (!byTime.has(c.t)) times.push(c.t);
    byTime.set(c.t, c);
  }
  times.sort((a, b) => a - b);
  const sorted = times.map((t) => byTime.get(t));
  sessionBase = base;
  sessionSums = new Map();
  for (let i = 0; i < times.length;) i = recomputeSession(i);
  const bars = sorted.map(barsOf);
  candles.setData(bars.map((b) => b.candle));
  volume.setData(bars.map((b) => b.volume));
  for (const [key, ind] of Object.entries(INDICATORS)) {
    ind.lines.forEach((l, i) => lineSeries[key][i].setData(sorted.map((c) => pointOf(c, l))));
  }
  rsi.setData(sorted.map((c) => linePoint(c, 'rsi_14')));
  rsiSeen = sorted.some((c) => num(c.rsi_14) != null);
  emptyEl.hidden = times.length > 0;
  updateRsiNote();
  // A re-read (a reconnect, rewritten candles) keeps the bar chosen from
  // the keyboard while it is still there.
  if (kbTime != null) {
    if (byTime.has(kbTime)) chart.setCrosshairPosition(byTime.get(kbTime).close, kbTime, candles);
    else clearSelection();
  }
}

// Applies one streamed candle: updates the forming bar or appends a new one.
function applyCandle(c) {
  if (c.interval !== state.interval || !Number.isFinite(c.t)) return;
  const last = times[times.length - 1];
  const isNew = !byTime.has(c.t);
  if (last != null && c.t < last && isNew) return; // an unknown old bar: cannot insert it
  const historical = last != null && c.t < last;
  byTime.set(c.t, c);
  if (isNew) times.push(c.t);
  const at = times.lastIndexOf(c.t);
  // A bar amended before its day's last one moves the session VWAP of the
  // day's later bars too.
  const sessionEnd = recomputeSession(at);
  const b = barsOf(c);
  try {
    candles.update(b.candle, historical);
    volume.update(b.volume, historical);
    for (const [key, ind] of Object.entries(INDICATORS)) {
      ind.lines.forEach((l, i) => {
        if (l.session && sessionEnd > at + 1) {
          lineSeries[key][i].setData(times.map((t) => sessionPoint(t)));
        } else {
          lineSeries[key][i].update(pointOf(c, l), historical);
        }
      });
    }
    rsi.update(linePoint(c, 'rsi_14'), historical);
  } catch (err) {
    console.warn('chart update failed', err);
  }
  if (num(c.rsi_14) != null) rsiSeen = true;
  updateRsiNote();
  emptyEl.hidden = true;
  chartNoteEl.hidden = true;
  if (isNew) refreshMarkers();
  if (!crosshairActive) renderLegend(kbTime);
}

// ---- the RSI pane's note -------------------------------------------------------------

// An empty pane reads as broken; say why it is empty instead.
function updateRsiNote() {
  const n = times.length;
  const show = n > 0 && !rsiSeen;
  if (show) {
    rsiNoteEl.textContent = n < RSI_NEEDS
      ? `RSI(14) needs ${RSI_NEEDS} candles; ${n} so far.`
      : 'RSI(14) has no values for these candles yet.';
  }
  if (show !== !rsiNoteEl.hidden) {
    rsiNoteEl.hidden = !show;
    if (show) placeRsiNote();
  }
}

// Centres the note on the RSI pane, whose place depends on the chart's size.
function placeRsiNote() {
  if (rsiNoteEl.hidden || !chart) return;
  const pane = chart.panes()[1];
  const paneEl = pane && pane.getHTMLElement();
  const box = rsiNoteEl.offsetParent;
  if (!paneEl || !box) return;
  const p = paneEl.getBoundingClientRect();
  const b = box.getBoundingClientRect();
  if (p.height === 0) {
    requestAnimationFrame(placeRsiNote); // not laid out yet
    return;
  }
  rsiNoteEl.style.top = `${p.top - b.top + p.height / 2}px`;
}
new ResizeObserver(() => requestAnimationFrame(placeRsiNote)).observe(chartEl);

// ---- markers and anomalies ---------------------------------------------------------

const SEVERITY_RANK = { low: 1, medium: 2, high: 3 };
const anomalyKey = (a) => `${a.kind}@${a.ts}`;

// The bucket an anomaly falls in at the current interval: 1m and 5m
// buckets are aligned on the Unix epoch (UTC) like the stream's, 1d
// candles begin at midnight New York (the scheduler's trading dates).
const bucketOf = (ts) => {
  const sec = Date.parse(ts) / 1000;
  if (state.interval === '1d') return nyMidnight(sec);
  const n = INTERVALS[state.interval];
  return Math.floor(sec / n) * n;
};

function refreshMarkers() {
  markersByTime = new Map();
  for (const a of anomalies) {
    const t = bucketOf(a.ts);
    if (!byTime.has(t)) continue;
    if (!markersByTime.has(t)) markersByTime.set(t, []);
    markersByTime.get(t).push(a);
  }
  // One marker per bar, so that texts never overlap: its anomaly's kind,
  // or "3 alerts" when it holds more; the tooltip lists them all.
  const list = [];
  for (const [t, group] of [...markersByTime].sort((x, y) => x[0] - y[0])) {
    group.sort((x, y) => Date.parse(x.ts) - Date.parse(y.ts));
    list.push(markerOf(t, group));
  }
  markers.setMarkers(list);
}

/**
 * The marker of a bar's anomalies: an up move is an up arrow under the
 * bar, a down move a down arrow over it, both in the candles' colours;
 * anything else, or a bar with moves both ways, a circle in the colour of
 * its most severe anomaly.
 */
function markerOf(t, group) {
  const top = group.reduce((best, a) => ((SEVERITY_RANK[a.severity] || 0) > (SEVERITY_RANK[best.severity] || 0) ? a : best));
  const dirs = new Set(group.map(anomalyDirection));
  const dir = dirs.size === 1 ? [...dirs][0] : null;
  const text = group.length > 1 ? `${group.length} alerts` : kindLabel(top.kind);
  const base = { time: t, text, id: anomalyKey(top) };
  if (dir === 'up') return { ...base, position: 'belowBar', shape: 'arrowUp', color: COLORS.up };
  if (dir === 'down') return { ...base, position: 'aboveBar', shape: 'arrowDown', color: COLORS.down };
  return { ...base, position: 'aboveBar', shape: 'circle', color: COLORS.sev[top.severity] || COLORS.sev.low };
}

function renderAnomalyList() {
  const sorted = [...anomalies].sort((x, y) => Date.parse(y.ts) - Date.parse(x.ts)).slice(0, 20);
  symAnomaliesEl.replaceChildren(...sorted.map((a) => anomalyItem(a, {
    showSymbol: false, interval: state.interval, range: state.range, timeZone: zoneTz(),
  })));
  symAnomaliesEmpty.hidden = sorted.length > 0;
}

function addAnomaly(a) {
  if (a.symbol !== symbol || anomalies.some((x) => anomalyKey(x) === anomalyKey(a))) return;
  anomalies.unshift(a);
  if (anomalies.length > 2 * MAX_ANOMALIES) {
    anomalies.sort((x, y) => Date.parse(y.ts) - Date.parse(x.ts));
    anomalies.length = MAX_ANOMALIES; // keep the newest
  }
  refreshMarkers();
  renderAnomalyList();
}

// ---- legend and marker tooltip --------------------------------------------------------

function legendItem(label, value, cls) {
  return el('span', { className: `lg-item${cls ? ` ${cls}` : ''}` }, el('span', { className: 'lg-label' }, label), ' ', value);
}

// The end of a candle's window in unix seconds: 1d candles end at the next
// New York midnight (23 or 25 hours on the days the clocks change), the
// others one interval after their start.
function bucketEnd(c) {
  if (state.interval === '1d') return nyMidnight(c.t + 26 * 3600);
  return c.t + INTERVALS[state.interval];
}

// A candle is forming only while trades can still reach it: a bar the
// processor never finalised because its symbol fell silent is as complete
// as it will get once its window has passed.
function isForming(c) {
  return c.final === false && Date.now() < bucketEnd(c) * 1000;
}

// Redraws the legend when the forming bar it shows closes, since no
// stream event may come to do it.
let formingTimer = 0;
function watchForming(c) {
  clearTimeout(formingTimer);
  if (!isForming(c)) return;
  const ms = bucketEnd(c) * 1000 - Date.now() + 50;
  formingTimer = setTimeout(() => {
    if (!crosshairActive) renderLegend(kbTime);
  }, Math.min(ms, 2 ** 31 - 1));
}

function renderLegend(t) {
  const c = byTime.get(t ?? times[times.length - 1]);
  clearTimeout(formingTimer);
  if (!c) {
    legendEl.replaceChildren(el('span', { className: 'lg-title' }, `${symbol} · ${state.interval}`));
    return;
  }
  const dir = c.close >= c.open ? 'up' : 'down';
  const parts = [
    el('span', { className: 'lg-title' }, `${symbol} · ${state.interval}`),
    el('span', { className: 'lg-time' }, fmtBarTime(c.t) + (isForming(c) ? ' (forming)' : '')),
    legendItem('O', fmtPrice(c.open)), legendItem('H', fmtPrice(c.high)),
    legendItem('L', fmtPrice(c.low)), legendItem('C', fmtPrice(c.close), dir),
    legendItem('V', fmtVolume(c.volume)),
    // The bar's own VWAP, beside the session VWAP line's value below.
    legendItem('Bar VWAP', fmtPrice(num(c.vwap))),
  ];
  const ind = [];
  for (const [key, def] of Object.entries(INDICATORS)) {
    if (!state.indicators.has(key)) continue;
    const vals = def.lines.map((l) => fmtPrice(num(pointOf(c, l).value))).join(' / ');
    ind.push(legendItem(def.label, vals, `ind-${key}`));
  }
  ind.push(legendItem('RSI 14', fmtDec1(num(c.rsi_14)), 'ind-rsi'));
  watchForming(c);
  legendEl.replaceChildren(el('div', { className: 'lg-row' }, ...parts), el('div', { className: 'lg-row' }, ...ind));
}

function onCrosshair(param) {
  // The chart also moves its crosshair itself when it redraws (no source
  // event), and reports a pointer off the bars (outside the chart, or on
  // its empty space): none of these may undo a bar chosen from the
  // keyboard. A pointer on a bar takes over.
  if (kbTime != null && (param.sourceEvent == null || param.point == null || param.time == null)) return;
  crosshairActive = param.time != null && param.point != null;
  if (crosshairActive) kbTime = null;
  renderLegend(crosshairActive ? param.time : kbTime);
  showTip(crosshairActive ? param.time : null, param.point);
}

// Lists a bar's anomalies beside point ({x, y} in the chart), or hides the
// list when the bar has none.
function showTip(t, point) {
  const group = t != null && point ? markersByTime.get(t) : null;
  if (!group) {
    tipEl.hidden = true;
    return;
  }
  tipEl.replaceChildren(...group.map((a) => el('div', { className: `tip-item sev-${a.severity}` },
    el('strong', {}, `${kindLabel(a.kind)} · ${a.severity}`), ' ',
    el('span', { className: 'muted' }, fmtStamp(a.ts, true, zoneTz())),
    el('div', {}, a.detail || ''))));
  tipEl.hidden = false;
  // Place it beside the crosshair, kept inside the chart box.
  const box = chartEl.getBoundingClientRect();
  const w = tipEl.offsetWidth;
  const h = tipEl.offsetHeight;
  let x = point.x + 16;
  if (x + w > box.width - 8) x = Math.max(8, point.x - w - 16);
  let y = point.y + 16;
  if (y + h > box.height - 8) y = Math.max(8, point.y - h - 16);
  tipEl.style.left = `${x}px`;
  tipEl.style.top = `${y}px`;
}

// ---- keyboard crosshair ------------------------------------------------------------

// The arrow keys step a crosshair through the bars (Home and End jump to
// the first and last, Escape lets go); the legend, the marker list and a
// status line for screen readers follow it.
function selectBar(i) {
  if (!times.length) return;
  const idx = Math.max(0, Math.min(times.length - 1, i));
  const t = times[idx];
  const c = byTime.get(t);
  kbTime = t;
  // Keep the bar in view.
  const ts = chart.timeScale();
  const r = ts.getVisibleLogicalRange();
  if (r && (idx < r.from + 1 || idx > r.to - 1)) {
    const width = r.to - r.from;
    const from = idx < r.from + 1 ? idx - 1 : idx - width + 1;
    ts.setVisibleLogicalRange({ from, to: from + width });
  }
  chart.setCrosshairPosition(c.close, t, candles);
  renderLegend(t);
  // A bar scrolled into view has no coordinate until the chart has drawn
  // the new range (a frame or more later on a busy machine).
  // Until then the list stays as it is rather than blinking out.
  let frames = 60;
  const place = () => {
    if (kbTime !== t) return;
    const x = ts.timeToCoordinate(t);
    const y = candles.priceToCoordinate(c.close);
    if (x == null || y == null) {
      if (!markersByTime.has(t)) showTip(null, null);
      else if (frames-- > 0) requestAnimationFrame(place);
      return;
    }
    showTip(t, { x, y });
  };
  place();
  const alerts = markersByTime.get(t);
  readoutEl.textContent = `${fmtBarTime(t)}: open ${fmtPrice(c.open)}, high ${fmtPrice(c.high)}, low ${fmtPrice(c.low)}, close ${fmtPrice(c.close)}, volume ${fmtVolume(c.volume)}`
    + (alerts ? `; ${alerts.map((a) => `${kindLabel(a.kind)} (${a.severity})`).join(', ')}` : '');
}

function clearSelection() {
  if (kbTime == null) return;
  kbTime = null;
  chart.clearCrosshairPosition();
  tipEl.hidden = true;
  readoutEl.textContent = '';
  if (!crosshairActive) renderLegend(null);
}

chartEl.addEventListener('keydown', (ev) => {
  if (ev.altKey || ev.ctrlKey || ev.metaKey || !chart || !times.length) return;
  const at = kbTime == null ? times.length - 1 : times.indexOf(kbTime);
  let next;
  switch (ev.key) {
    case 'ArrowLeft': next = at - 1; break;
    case 'ArrowRight': next = at + 1; break;
    case 'Home': next = 0; break;
    case 'End': next = times.length - 1; break;
    case 'Escape':
      clearSelection();
      return;
    default: return;
  }
  ev.preventDefault();
  selectBar(next);
});
chartEl.addEventListener('blur', clearSelection);

// ---- trades ---------------------------------------------------------------------

let newestTrade = null; // {ms, seq} of the newest row shown

const isNewer = (tr, ref) => {
  if (!ref) return true;
  const ms = Date.parse(tr.ts);
  return ms > ref.ms || (ms === ref.ms && tr.seq > ref.seq);
};

// A bid or ask cell. A trade from a trade-only feed has no quote (bid and
// ask null): a dash, with a title that says why.
function quoteCell(v) {
  if (v == null) {
    return el('td', { className: 'num col-quote muted', title: 'no quote: the feed sent this trade without one' }, '–');
  }
  return el('td', { className: 'num col-quote' }, fmtPrice(v));
}

function tradeRow(tr, prevPrice) {
  const dir = prevPrice == null || tr.price === prevPrice ? '' : tr.price > prevPrice ? 'up' : 'down';
  return el('tr', { dataset: { seq: String(tr.seq) } },
    el('td', {}, el('time', { dateTime: tr.ts }, fmtTime(tr.ts, true, zoneTz()))),
    el('td', { className: `num ${dir}` }, (dir === 'up' ? '▲ ' : dir === 'down' ? '▼ ' : '') + fmtPrice(tr.price)),
    el('td', { className: 'num' }, fmtInt(tr.size)),
    quoteCell(tr.bid),
    quoteCell(tr.ask),
  );
}

// Adds trades (newest first) above the rows shown, skipping ones already shown.
function addTrades(list) {
  const fresh = list.filter((tr) => isNewer(tr, newestTrade));
  if (!fresh.length) return;
  const firstRow = tradesEl.firstElementChild;
  const prevShown = firstRow ? Number(firstRow.dataset.price) : null;
  const rowsToAdd = fresh.map((tr, i) => {
    const prev = i + 1 < fresh.length ? fresh[i + 1].price : prevShown;
    const row = tradeRow(tr, Number.isFinite(prev) ? prev : null);
    row.dataset.price = String(tr.price);
    return row;
  });
  tradesEl.prepend(...rowsToAdd);
  while (tradesEl.children.length > MAX_TRADES) tradesEl.lastElementChild.remove();
  newestTrade = { ms: Date.parse(fresh[0].ts), seq: fresh[0].seq };
}

// While paused the table stands still so that a row can be read or
// copied; trades that arrive are held (newest first, no more than the
// table shows, since older ones would scroll off on resuming anyway) and
// counted on the button.
const tradePause = { paused: false, held: [], count: 0, newest: null };
const pauseBtn = document.getElementById('trades-pause');
const pauseCountEl = document.getElementById('trades-new');

function holdTrades(list) {
  const fresh = list.filter((tr) => isNewer(tr, tradePause.newest ?? newestTrade));
  if (!fresh.length) return;
  tradePause.held = [...fresh, ...tradePause.held].slice(0, MAX_TRADES);
  tradePause.newest = { ms: Date.parse(fresh[0].ts), seq: fresh[0].seq };
  tradePause.count += fresh.length;
  renderPause();
}

function renderPause() {
  pauseBtn.setAttribute('aria-pressed', String(tradePause.paused));
  pauseCountEl.textContent = tradePause.paused && tradePause.count ? `${fmtInt(tradePause.count)} new` : '';
  pauseBtn.title = tradePause.paused ? 'Resume the live trades' : 'Stop the table from changing';
}

pauseBtn.addEventListener('click', () => {
  tradePause.paused = !tradePause.paused;
  if (!tradePause.paused) {
    const held = tradePause.held;
    Object.assign(tradePause, { held: [], count: 0, newest: null });
    addTrades(held);
  }
  renderPause();
});

function applyTick(ev) {
  if (ev.symbol !== symbol) return;
  setLast(ev.price, ev.ts);
  if (!Array.isArray(ev.trades)) return;
  if (tradePause.paused) holdTrades(ev.trades);
  else addTrades(ev.trades);
}

async function loadTrades() {
  tradeGate.close();
  try {
    const res = await fetchJSON(`/api/ticks?symbol=${encodeURIComponent(symbol)}&limit=${MAX_TRADES}`);
    const list = (res && res.ticks) || [];
    if (tradePause.paused) {
      // A re-read after a reconnect: what it brings waits with the rest.
      holdTrades(list);
      if (list.length) setLast(list[0].price, list[0].ts);
      return;
    }
    tradesEl.replaceChildren();
    newestTrade = null;
    addTrades(list);
    if (list.length) setLast(list[0].price, list[0].ts);
  } finally {
    tradeGate.open();
  }
}

// ---- the header: last price and the change on the day ---------------------------------------

// As on the overview: the change is measured from the day's first trade,
// the open of the first 1m candle of the New York trading day.
const quote = { last: null, lastMs: -Infinity, dayOpen: null, bucket: null };
const nyDay = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/New_York', year: 'numeric', month: '2-digit', day: '2-digit' });
const dayOf = (sec) => nyDay.format(new Date(sec * 1000));
const pctFmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2, useGrouping: false });

// Takes a trade's price unless a later one is shown already.
function setLast(price, ts) {
  const ms = Date.parse(ts);
  if (!Number.isFinite(price) || (Number.isFinite(ms) && ms < quote.lastMs)) return;
  quote.last = price;
  if (Number.isFinite(ms)) quote.lastMs = ms;
  renderQuote();
}

function renderQuote() {
  lastPriceEl.textContent = quote.last == null ? '' : fmtPrice(quote.last);
  const change = quote.last != null && quote.dayOpen ? quote.last - quote.dayOpen : null;
  lastChangeEl.classList.remove('up', 'down', 'flat');
  if (change == null) {
    lastChangeEl.textContent = '';
    lastChangeEl.title = '';
    return;
  }
  const pct = (100 * change) / quote.dayOpen;
  const sign = pct > 0 ? '+' : pct < 0 ? '−' : '';
  lastChangeEl.textContent = `${fmtChange(change)} (${sign}${pctFmt.format(Math.abs(pct))}%)`;
  lastChangeEl.classList.add(direction(change));
  lastChangeEl.title = `Change since the day's first trade (New York trading day) at ${fmtPrice(quote.dayOpen)}`;
}

// The intraday candles the header follows: the chart's own, or 1m under
// a 1d chart (1d candles are the scheduler's, written after the close).
const dayInterval = () => (state.interval === '1d' ? '1m' : state.interval);

// The stream this page needs: its symbol's trades and anomalies, and the
// candles of the interval shown (with 1m for the header under 1d).
function streamPath() {
  const candles = state.interval === '1d' ? '1m,1d' : state.interval;
  return `/api/stream?symbol=${encodeURIComponent(symbol)}&ticks=trades&candles=${candles}&anomalies=1`;
}

// An intraday candle of a new trading day moves the reference to its
// open: the first 1m or 5m candle of a New York day opens with its first
// trade (New York's days begin on a whole hour).
function trackDay(c) {
  if (c.symbol !== symbol || c.interval !== dayInterval() || !Number.isFinite(c.t)) return;
  if (quote.bucket != null && c.t < quote.bucket) return;
  if (quote.bucket == null || dayOf(c.t) !== dayOf(quote.bucket)) quote.dayOpen = c.open;
  quote.bucket = c.t;
  renderQuote();
}

async function loadQuote() {
  const list = await fetchJSON(`/api/symbols?symbol=${encodeURIComponent(symbol)}`);
  const q = Array.isArray(list) ? list.find((x) => x.symbol === symbol) : null;
  if (!q) return;
  const bucket = Math.floor(Date.parse(q.bucket) / 1000);
  if (quote.bucket == null || (Number.isFinite(bucket) && bucket >= quote.bucket)) {
    quote.dayOpen = q.day_open;
    quote.bucket = Number.isFinite(bucket) ? bucket : quote.bucket;
  }
  setLast(q.last, q.ts);
  renderQuote();
}

// ---- controls and URL state -------------------------------------------------------------

function loadIndicatorChoice() {
  try {
    const v = JSON.parse(localStorage.getItem('stockpipe.indicators') || '[]');
    return Array.isArray(v) ? v.filter((k) => Object.hasOwn(INDICATORS, k)) : [];
  } catch {
    return [];
  }
}

function loadZoneChoice() {
  try {
    const v = localStorage.getItem('stockpipe.timezone');
    return Object.hasOwn(ZONES, v) ? v : 'exchange';
  } catch {
    return 'exchange';
  }
}

// The reader's own zone: its IANA name and short name now ("JST", "GMT+9").
function localZone() {
  const name = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
  const part = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(new Date())
    .find((p) => p.type === 'timeZoneName');
  return { name, abbr: part ? part.value : name };
}

// The zone's name beside the chart and over the trades' times.
function renderZone() {
  const z = ZONES[state.zone];
  if (state.zone === 'local') {
    const { name, abbr } = localZone();
    zoneLabelEl.textContent = `Times in your time zone (${name}, ${abbr})`;
    tradesZoneEl.textContent = `(${abbr})`;
  } else {
    zoneLabelEl.textContent = state.zone === 'utc' ? 'Times in UTC' : `Times in ${z.place} (${z.abbr})`;
    tradesZoneEl.textContent = `(${z.abbr})`;
  }
  // Trading dates are New York's whatever the zone: say so under 1d.
  if (state.interval === '1d') zoneLabelEl.textContent += '; daily bars by their trading date';
  zoneSelect.value = state.zone;
}

function applyZone() {
  renderZone();
  setCsvLink();
  if (chart) chart.applyOptions(chartTimeOptions());
  for (const t of tradesEl.querySelectorAll('time')) t.textContent = fmtTime(t.dateTime, true, zoneTz());
  renderAnomalyList();
  if (kbTime != null) selectBar(times.indexOf(kbTime));
  else if (!crosshairActive) renderLegend(null);
  syncControls();
}

function syncControls() {
  for (const b of document.querySelectorAll('button[data-interval]')) {
    b.setAttribute('aria-pressed', String(b.dataset.interval === state.interval));
  }
  for (const b of document.querySelectorAll('button[data-range]')) {
    b.setAttribute('aria-pressed', String(b.dataset.range === state.range));
  }
  for (const cb of document.querySelectorAll('input[data-ind]')) {
    cb.checked = state.indicators.has(cb.dataset.ind);
  }
  const note = document.getElementById('at-note');
  note.hidden = !state.at;
  if (state.at) {
    const t = document.getElementById('at-time');
    t.dateTime = state.at;
    t.textContent = fmtStamp(state.at, false, zoneTz());
  }
  const q = new URLSearchParams({ interval: state.interval, range: state.range });
  if (state.at) q.set('at', state.at);
  history.replaceState(null, '', `${location.pathname}?${q}`);
  window.stockpipe.interval = state.interval;
  renderZone();
}

// The CSV's times are in the zone the page shows, each with its offset.
// A zone change keeps the range last loaded (state.csvFrom).
function setCsvLink(from = state.csvFrom) {
  state.csvFrom = from;
  const q = new URLSearchParams({ symbol, interval: state.interval, limit: String(MAX_CANDLES), format: 'csv' });
  if (from != null) q.set('from', isoFromUnix(from));
  q.set('tz', zoneTz() || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC');
  csvLink.href = `/api/candles?${q}`;
  csvLink.download = `${symbol}-${state.interval}.csv`;
}

for (const b of document.querySelectorAll('button[data-interval]')) {
  b.addEventListener('click', () => {
    if (state.interval === b.dataset.interval) return;
    state.interval = b.dataset.interval;
    syncControls();
    // Another interval's candles need another stream; the chart is read
    // once it is open, so that no candle falls between the two.
    loadGen++;
    chartGate.close();
    window.stockpipe.loaded = false;
    stream.reopen(streamPath(), () => load());
  });
}
for (const b of document.querySelectorAll('button[data-range]')) {
  b.addEventListener('click', () => {
    if (state.range === b.dataset.range) return;
    state.range = b.dataset.range;
    syncControls();
    load();
  });
}
for (const cb of document.querySelectorAll('input[data-ind]')) {
  cb.addEventListener('change', () => {
    const key = cb.dataset.ind;
    if (cb.checked) state.indicators.add(key);
    else state.indicators.delete(key);
    for (const s of lineSeries[key] || []) s.applyOptions({ visible: cb.checked });
    try {
      localStorage.setItem('stockpipe.indicators', JSON.stringify([...state.indicators]));
    } catch { /* storage may be unavailable */ }
    if (!crosshairActive) renderLegend(kbTime);
  });
}
zoneSelect.addEventListener('change', () => {
  if (!Object.hasOwn(ZONES, zoneSelect.value) || zoneSelect.value === state.zone) return;
  state.zone = zoneSelect.value;
  try {
    localStorage.setItem('stockpipe.timezone', state.zone);
  } catch { /* storage may be unavailable */ }
  applyZone();
});
document.getElementById('fit').addEventListener('click', () => chart && chart.timeScale().fitContent());
document.getElementById('clear-at').addEventListener('click', () => {
  state.at = '';
  syncControls();
  load();
});

// ---- the symbol switcher ---------------------------------------------------------------

// Tickers as the server accepts them (market.ValidSymbol).
const TICKER = /^[A-Z][A-Z0-9.-]{0,11}$/;
const gotoForm = document.getElementById('goto');
const gotoInput = document.getElementById('goto-input');
const gotoMsg = document.getElementById('goto-msg');
const gotoList = document.getElementById('goto-symbols');
// The symbols with data, from /api/symbols; empty until (or unless) it answers.
let knownSymbols = new Set();

async function loadSymbols() {
  const list = await fetchJSON('/api/symbols');
  const names = Array.isArray(list) ? list.map((q) => q.symbol).filter((x) => typeof x === 'string') : [];
  knownSymbols = new Set(names);
  gotoList.replaceChildren(...names.map((n) => el('option', { value: n })));
}

function gotoSay(msg) {
  gotoMsg.textContent = msg;
  if (msg) gotoInput.setAttribute('aria-invalid', 'true');
  else gotoInput.removeAttribute('aria-invalid');
}

// Opens another symbol's chart at the interval and range shown here (not
// `at`, a moment chosen on this symbol's chart).
function gotoSymbol(raw) {
  const sym = raw.trim().toUpperCase();
  if (!sym) {
    gotoSay('Type a ticker.');
    return;
  }
  if (!TICKER.test(sym)) {
    gotoSay(`“${raw.trim()}” is not a ticker.`);
    return;
  }
  // Without the list (it failed to load) any well-formed ticker may go:
  // its page says so if it has no data.
  if (knownSymbols.size && !knownSymbols.has(sym)) {
    gotoSay(`No data for ${sym}.`);
    return;
  }
  gotoSay('');
  if (sym === symbol) return;
  const q = new URLSearchParams({ interval: state.interval, range: state.range });
  location.assign(`/symbol/${encodeURIComponent(sym)}?${q}`);
}

gotoForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  gotoSymbol(gotoInput.value);
});
gotoInput.addEventListener('input', (ev) => {
  // A pick from the list arrives as an input event that is not typing
  // (Chromium marks it insertReplacementText; some browsers send a plain
  // Event): go at once. Typing only clears an earlier complaint.
  const picked = !(ev instanceof InputEvent) || ev.inputType === 'insertReplacementText';
  if (picked && knownSymbols.has(gotoInput.value.trim().toUpperCase())) gotoSymbol(gotoInput.value);
  else if (gotoMsg.textContent) gotoSay('');
});

// ---- loading -----------------------------------------------------------------------------

// A gate holds stream events while a fetch is in flight and applies them,
// in order, once it opens, so nothing in between is lost or overwritten.
function makeGate() {
  let isOpen = false;
  const held = [];
  return {
    wrap: (fn) => (data) => (isOpen ? fn(data) : held.push(() => fn(data))),
    open() {
      isOpen = true;
      for (const fn of held.splice(0)) fn();
    },
    close() { isOpen = false; },
  };
}
const chartGate = makeGate();
const tradeGate = makeGate();

let loadGen = 0;

// Reads candles for the current interval and range, plus anomalies, and
// positions the chart. Stream events that arrive meanwhile are held by
// chartGate and applied afterwards.
async function load() {
  const gen = ++loadGen;
  chartGate.close();
  window.stockpipe.loaded = false;
  window.stockpipe.interval = state.interval;
  const ivs = INTERVALS[state.interval];
  const span = RANGES[state.range];
  const sym = encodeURIComponent(symbol);
  try {
    // The range ends at the latest candle (or is centred on `at`), so a
    // replayed or paused feed still shows data.
    let from = null;
    const atSec = state.at ? Math.floor(Date.parse(state.at) / 1000) : null;
    if (span != null && atSec != null) {
      from = atSec - span;
    } else if (span != null) {
      const latest = await fetchJSON(`/api/candles?symbol=${sym}&interval=${state.interval}&limit=1`);
      const last = latest && latest.candles && latest.candles[latest.candles.length - 1];
      // The bars that begin less than a span before the latest one. (Not
      // rounded to UTC days: 1d bars begin at midnight New York.)
      if (last) from = last.t - span + 1;
    }
    if (gen !== loadGen) return;
    const q = new URLSearchParams({ symbol, interval: state.interval, limit: String(MAX_CANDLES) });
    const aq = new URLSearchParams({ symbol, limit: String(MAX_ANOMALIES) });
    // The session VWAP of the first shown bars needs their day's earlier
    // bars too: intraday, the candles are read from that day's New York
    // midnight (at most a day more), and those before the range only
    // count towards the sums.
    const intraday = state.interval !== '1d';
    const readFrom = from != null && intraday ? nyMidnight(from) : from;
    if (from != null) {
      q.set('from', isoFromUnix(readFrom));
      aq.set('since', isoFromUnix(from));
    }
    setCsvLink(from);
    const [candleRes, anomalyRes] = await Promise.all([
      fetchJSON(`/api/candles?${q}`),
      fetchJSON(`/api/anomalies?${aq}`).catch((err) => {
        console.warn('anomalies', err);
        return { anomalies: [] };
      }),
    ]);
    if (gen !== loadGen) return;
    const rows = (candleRes && candleRes.candles) || [];
    const shown = from == null ? rows : rows.filter((c) => c.t >= from);
    let before = from == null ? [] : rows.filter((c) => c.t < from);
    if (from == null && intraday && rows.length >= MAX_CANDLES) {
      // The latest MAX_CANDLES may begin in the middle of a day: read the
      // rest of that day for its sums.
      const dayStart = nyMidnight(rows[0].t);
      if (dayStart < rows[0].t) {
        const pq = new URLSearchParams({
          symbol, interval: state.interval, limit: String(MAX_CANDLES),
          from: isoFromUnix(dayStart), to: isoFromUnix(rows[0].t - 1),
        });
        const prefix = await fetchJSON(`/api/candles?${pq}`);
        if (gen !== loadGen) return;
        before = (prefix && prefix.candles) || [];
      }
    }
    let base = null;
    if (shown.length) {
      const day = dayOfBar(shown[0].t);
      base = { day, ...sessionSumsOf(before.filter((c) => dayOfBar(c.t) === day)) };
    }
    setAllData(shown, base);
    anomalies = (anomalyRes && anomalyRes.anomalies) || [];
    refreshMarkers();
    renderAnomalyList();
    position(atSec, span, ivs);
    renderLegend(kbTime);
    showError('');
    chartNoteEl.hidden = true;
  } catch (err) {
    if (gen !== loadGen) return;
    if (err.status === 404) {
      const extra = /unknown symbol/i.test(err.message) ? '' : ` (${err.message})`;
      showError(`Unknown symbol “${symbol}”${extra}.`);
      stream.close();
    } else {
      showError(`Could not load ${symbol} candles: ${err.message}`);
    }
    // Never leave another interval's bars under this one's label.
    setAllData([]);
    anomalies = [];
    refreshMarkers();
    renderAnomalyList();
    renderLegend(null);
    emptyEl.hidden = true;
    chartNoteEl.hidden = false;
  } finally {
    if (gen === loadGen) {
      window.stockpipe.loaded = true;
      chartGate.open();
    }
  }
}

// Shows the loaded range, or centres on `at` with the range's width.
function position(atSec, span, ivs) {
  const ts = chart.timeScale();
  if (!times.length) return;
  if (atSec == null) {
    ts.fitContent();
    return;
  }
  // Index of the bar holding `at` (or the nearest one after it).
  const target = Math.floor(atSec / ivs) * ivs;
  let lo = 0;
  let hi = times.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] < target) lo = mid + 1;
    else hi = mid;
  }
  const width = Math.min(400, Math.max(20, span ? Math.round(span / ivs) : 120));
  ts.setVisibleLogicalRange({ from: lo - width / 2, to: lo + width / 2 });
}

// ---- start ---------------------------------------------------------------------------------

syncControls();
if (!LWC) {
  showError('The chart library did not load.');
  window.stockpipe.loaded = true;
  throw new Error('LightweightCharts is missing');
}
createChart();
onThemeChange(applyTheme);
renderLegend(null);

const gatedCandle = chartGate.wrap(applyCandle);
const stream = openStream(streamPath(), {
  tick: tradeGate.wrap(applyTick),
  candle: (c) => {
    trackDay(c);
    gatedCandle(c);
  },
  anomaly: chartGate.wrap(addAnomaly),
  // The scheduler rewrote stored candles (the 1d bars after the close, a
  // backfill): re-read the chart if they are the ones shown. A load in
  // flight is superseded, and reads after the commit.
  candles_changed: (d) => {
    if (d && d.interval === state.interval && (d.symbol === symbol || d.symbol === '*')) load();
  },
  reconnected: () => {
    load();
    loadTrades().catch((err) => console.warn('trades', err));
    loadQuote().catch((err) => console.warn('quote', err));
  },
});

loadTrades().catch((err) => {
  if (err.status !== 404) showError(`Could not load trades: ${err.message}`);
});
loadQuote().catch((err) => {
  if (err.status !== 404) console.warn('quote', err);
});
loadSymbols().catch((err) => console.warn('symbols', err));
load();
