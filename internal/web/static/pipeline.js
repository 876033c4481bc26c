// The pipeline page: Kafka brokers, topics and consumer groups, the dead
// letters, the processor's throughput and latency, and the database's table
// sizes. The first picture comes from /api/pipeline; after that the
// "pipeline" events of /api/stream carry the same object, with each history
// holding only its newest point(s), which are appended to the charts (drawn
// with TradingView Lightweight Charts™, loaded as the global
// LightweightCharts).

// The shared helpers are loaded with this module's own ?v= query so that a
// new release never mixes old and new modules.
const {
  fetchJSON, openStream, showError, el, fmtInt, fmtTime, fmtDateTime, cssVar, onThemeChange,
} = await import(`./common.js${new URL(import.meta.url).search}`);

const HISTORY_S = 600; // the charts show the last ten minutes

// The charts' colours come from the stylesheet's theme variables, read
// again when the theme changes (a canvas does not follow CSS by itself).
const COLORS = {};
function readColors() {
  COLORS.text = cssVar('--chart-text', '#c9d1d9');
  COLORS.grid = cssVar('--chart-grid', '#21262d');
  COLORS.border = cssVar('--chart-border', '#30363d');
  COLORS.bg = cssVar('--chart-bg', '#0d1117');
  // Series colours; the legends' swatches (.swatch.c0 …) use the same.
  COLORS.series = [cssVar('--series-0', '#58a6ff'), cssVar('--series-1', '#f0883e'), cssVar('--series-2', '#d2a8ff')];
}
readColors();
const trends = [];
onThemeChange(() => {
  readColors();
  for (const tr of trends) tr.recolor();
});

const $ = (id) => document.getElementById(id);

/** The newest snapshot applied (histories aside). */
let current = null;

// Read-only hooks for browser tests.
window.stockpipe = {
  loaded: false,
  updates: 0,
  // The charts' background colours, which follow the theme.
  chartBackgrounds: () => trends.filter((t) => t.chart).map((t) => t.chart.options().layout.background.color),
  lagTotal(group) {
    const g = current && Array.isArray(current.groups) ? current.groups.find((x) => x.group === group) : null;
    return g && Number.isFinite(g.lag_total) ? g.lag_total : null;
  },
};

// ---- formatting ------------------------------------------------------------------

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const dec1 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const dec2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

/** A plain integer without grouping (for the test hooks); "–" when unknown. */
function plainInt(v) {
  return isNum(v) ? String(Math.round(v)) : '–';
}

/** A rate: one decimal, whole numbers from 10,000 up. */
function fmtRate(v) {
  if (!isNum(v)) return '–';
  return Math.abs(v) >= 10000 ? fmtInt(v) : dec1.format(v);
}

/** Milliseconds: two decimals below 10, one above. */
function fmtMs(v) {
  if (!isNum(v)) return '–';
  return Math.abs(v) < 10 ? dec2.format(v) : dec1.format(v);
}

/** A count for an axis label: 1,234 or 120K. */
function fmtCount(v) {
  if (!isNum(v)) return '–';
  if (Math.abs(v) < 0.5) return '0';
  return Math.abs(v) >= 1e5 ? compact.format(v) : fmtInt(v);
}

/** An axis label: short at any magnitude (0.25, 12.5, 840, 12K). */
function fmtAxis(v) {
  if (!isNum(v)) return '–';
  const a = Math.abs(v);
  if (a < 0.005) return '0';
  if (a >= 1e4) return compact.format(v);
  if (a >= 100) return fmtInt(v);
  return a >= 10 ? dec1.format(v) : dec2.format(v);
}

/** Bytes in binary units: 512 B, 1.5 KiB, 120 MiB. */
function fmtBytes(n) {
  if (!isNum(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${fmtInt(v)} B`;
  return `${v >= 100 ? fmtInt(v) : dec1.format(v)} ${units[i]}`;
}

const clockFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
// The TickMarkType of a label that shows seconds.
const TICK_WITH_SECONDS = 4;
const clockSecFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });

/** A <time> element for an RFC 3339 string. */
function timeEl(ts) {
  return el('time', { dateTime: ts || '', title: ts ? fmtDateTime(ts) : '' }, ts ? fmtTime(ts) : '–');
}

/** A table cell with a number, right-aligned. */
function numCell(text, className = '') {
  return el('td', { className: `num ${className}`.trim() }, text);
}

/** A wrapper that lets a wide table scroll sideways, reachable by keyboard. */
function scroller(label, table) {
  return el('div', { className: 'table-scroll', tabIndex: 0, role: 'region', 'aria-label': label }, table);
}

/** A table with a header row of column names; cols are [label, numeric?, class?]. */
function makeTable(className, cols) {
  const tbody = el('tbody');
  const table = el('table', { className: `pl-table ${className}` },
    el('thead', {}, el('tr', {}, ...cols.map(([label, numeric, cls]) => el('th', {
      scope: 'col', className: [numeric ? 'num' : '', cls || ''].join(' ').trim(),
    }, label)))),
    tbody);
  return { table, tbody };
}

function emptyRow(cols, text) {
  return el('tr', { className: 'empty-row' }, el('td', { colSpan: cols, className: 'muted' }, text));
}

// ---- charts ---------------------------------------------------------------------

const LWC = window.LightweightCharts;
if (!LWC) $('charts-missing').hidden = false;

/**
 * A small live line chart of the last ten minutes. defs name the fields of
 * the history points drawn as lines: [{ key, label, color? }]. fmt formats
 * the newest values in the legend (unit appended there), axis those on the
 * value axis. All the charted quantities are never negative, so the axis
 * starts at zero.
 */
class Trend {
  constructor(container, legendEl, defs, { fmt, axis = fmtAxis, unit = '', minMove = 0.01 }) {
    this.defs = defs;
    this.fmt = fmt;
    this.unit = unit;
    this.legendEl = legendEl;
    this.points = []; // ascending by t, unique t
    this.chart = null;
    this.series = [];
    if (!LWC || !container) return;
    this.chart = LWC.createChart(container, {
      autoSize: true,
      layout: {
        background: { type: LWC.ColorType.Solid, color: COLORS.bg },
        textColor: COLORS.text,
        fontFamily: getComputedStyle(document.body).fontFamily,
        fontSize: 11,
        attributionLogo: false, // attribution is a visible link on the page
      },
      grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
      rightPriceScale: { borderColor: COLORS.border, scaleMargins: { top: 0.12, bottom: 0.08 } },
      timeScale: {
        borderColor: COLORS.border,
        timeVisible: true,
        secondsVisible: true,
        fixLeftEdge: true,
        fixRightEdge: true,
        tickMarkFormatter: (t, type) => (type === TICK_WITH_SECONDS ? clockSecFmt : clockFmt).format(new Date(t * 1000)),
      },
      localization: { timeFormatter: (t) => clockSecFmt.format(new Date(t * 1000)) },
      // A monitor, not an explorer: the whole window always shows, and the
      // page scrolls normally over the charts on touch screens.
      handleScroll: false,
      handleScale: false,
    });
    trends.push(this);
    this.series = defs.map((d, i) => this.chart.addSeries(LWC.LineSeries, {
      color: COLORS.series[d.color ?? i],
      lineWidth: 2,
      priceLineVisible: false,
      lastValueVisible: true,
      crosshairMarkerRadius: 3,
      priceFormat: { type: 'custom', formatter: axis, minMove },
      autoscaleInfoProvider: (original) => {
        const r = original();
        if (r && r.priceRange) {
          r.priceRange.minValue = 0;
          r.priceRange.maxValue = Math.max(r.priceRange.maxValue, 1);
        }
        return r;
      },
    }));
  }

  recolor() {
    if (!this.chart) return;
    this.chart.applyOptions({
      layout: { background: { type: LWC.ColorType.Solid, color: COLORS.bg }, textColor: COLORS.text },
      grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
      rightPriceScale: { borderColor: COLORS.border },
      timeScale: { borderColor: COLORS.border },
    });
    this.series.forEach((s, i) => s.applyOptions({ color: COLORS.series[this.defs[i].color ?? i] }));
  }

  #point(p, key) {
    const v = p[key];
    return isNum(v) ? { time: p.t, value: v } : { time: p.t };
  }

  /** Replaces the whole history. */
  set(points) {
    const byT = new Map();
    for (const p of points || []) if (p && isNum(p.t)) byT.set(p.t, p);
    this.points = [...byT.values()].sort((a, b) => a.t - b.t);
    this.#trim();
    this.#redraw();
  }

  /** Appends newer points; a point at the newest time replaces it. */
  add(points) {
    const fresh = (points || []).filter((p) => p && isNum(p.t)).sort((a, b) => a.t - b.t);
    let changed = false;
    for (const p of fresh) {
      const last = this.points[this.points.length - 1];
      if (last && p.t < last.t) continue; // already shown
      if (last && p.t === last.t) this.points[this.points.length - 1] = p;
      else this.points.push(p);
      changed = true;
      this.series.forEach((s, i) => {
        try {
          s.update(this.#point(p, this.defs[i].key));
        } catch (err) {
          console.warn('chart update failed', err);
        }
      });
    }
    if (!changed) return;
    if (this.#trim()) this.#redraw();
    else this.#fit();
  }

  // Drops points older than the window; true when any went.
  #trim() {
    const last = this.points[this.points.length - 1];
    if (!last) return false;
    const from = last.t - HISTORY_S;
    const i = this.points.findIndex((p) => p.t >= from);
    if (i <= 0) return false;
    this.points.splice(0, i);
    return true;
  }

  #redraw() {
    this.series.forEach((s, i) => s.setData(this.points.map((p) => this.#point(p, this.defs[i].key))));
    this.#fit();
  }

  #fit() {
    if (this.chart) this.chart.timeScale().fitContent();
    this.#legend();
  }

  // The newest values as text: what the chart shows, readable without it.
  #legend() {
    if (!this.legendEl) return;
    const last = this.points[this.points.length - 1];
    const parts = [];
    this.defs.forEach((d, i) => {
      const v = last ? last[d.key] : null;
      if (i) parts.push(' ');
      parts.push(el('span', { className: 'legend-item' },
        el('span', { className: `swatch c${d.color ?? i}`, 'aria-hidden': 'true' }),
        `${d.label} `,
        el('span', { className: 'legend-value' }, isNum(v) ? `${this.fmt(v)}${this.unit}` : '–')));
    });
    this.legendEl.replaceChildren(...parts);
  }

  remove() {
    if (this.chart) this.chart.remove();
    this.chart = null;
  }
}

const procCharts = [
  new Trend($('chart-rate'), $('legend-rate'),
    [{ key: 'ticks_in_per_s', label: 'in' }, { key: 'ticks_out_per_s', label: 'out' }], { fmt: fmtRate, unit: '/s' }),
  new Trend($('chart-batch'), $('legend-batch'), [{ key: 'batch_size_avg', label: 'avg' }], { fmt: (v) => dec1.format(v) }),
  new Trend($('chart-commit'), $('legend-commit'),
    [{ key: 'commit_ms_p50', label: 'p50' }, { key: 'commit_ms_p99', label: 'p99' }], { fmt: fmtMs, unit: ' ms' }),
  new Trend($('chart-e2e'), $('legend-e2e'),
    [{ key: 'e2e_ms_p50', label: 'p50' }, { key: 'e2e_ms_p99', label: 'p99' }], { fmt: fmtMs, unit: ' ms' }),
];

const kafkaDown = (p) => typeof p.kafka_error === 'string' && p.kafka_error !== '';

// ---- brokers ----------------------------------------------------------------------

function renderBrokers(p) {
  const errBox = $('kafka-error');
  const err = kafkaDown(p) ? p.kafka_error : '';
  errBox.textContent = err ? `Kafka: ${err}` : '';
  errBox.hidden = !err;
  const brokers = Array.isArray(p.brokers) ? p.brokers : [];
  $('broker-rows').replaceChildren(...brokers.map((b) => el('tr', { dataset: { broker: String(b.id) } },
    el('th', { scope: 'row', className: 'num' }, String(b.id)),
    el('td', { className: 'mono' }, b.host || '–'),
    numCell(isNum(b.port) ? String(b.port) : '–'),
  )));
  $('brokers-body').hidden = brokers.length === 0;
  $('brokers-empty').hidden = brokers.length > 0 || !!err;
}

// ---- topics ---------------------------------------------------------------------------

function renderTopics(p) {
  const table = $('topics-table');
  const topics = Array.isArray(p.topics) ? p.topics : [];
  for (const tb of [...table.tBodies]) tb.remove();
  for (const t of topics) {
    const parts = Array.isArray(t.partitions) ? t.partitions : [];
    let retained = 0;
    for (const pp of parts) if (isNum(pp.end) && isNum(pp.start)) retained += pp.end - pp.start;
    const tbody = el('tbody', { className: 'topic-group' },
      el('tr', { className: 'topic-row', dataset: { topic: t.name } },
        el('th', { scope: 'rowgroup', colSpan: 4 },
          el('span', { className: 'topic-name' }, t.name),
          ' ',
          el('span', { className: 'muted small' }, `${parts.length} partition${parts.length === 1 ? '' : 's'}`)),
        numCell(fmtInt(retained), 'messages'),
        numCell(fmtRate(t.messages_per_s), 'rate'),
      ),
      ...parts.map((pp) => el('tr', { className: 'partition-row', dataset: { partition: String(pp.partition) } },
        el('th', { scope: 'row', className: 'part-num' }, el('span', { className: 'visually-hidden' }, `${t.name} partition `), String(pp.partition)),
        numCell(isNum(pp.leader) ? String(pp.leader) : '–'),
        numCell(fmtInt(pp.start)),
        numCell(fmtInt(pp.end)),
        numCell(isNum(pp.end) && isNum(pp.start) ? fmtInt(pp.end - pp.start) : '–'),
        numCell(fmtRate(pp.messages_per_s), 'rate'),
      )),
    );
    table.append(tbody);
  }
  $('topics-body').hidden = topics.length === 0;
  $('topics-empty').textContent = kafkaDown(p) ? 'Kafka is unreachable — see Brokers.' : 'No topics to show.';
  $('topics-empty').hidden = topics.length > 0;
}

// ---- consumer groups ----------------------------------------------------------------------

/** group name → its view (see makeGroup). */
const groupViews = new Map();
let groupSeq = 0;

function makeGroup(name) {
  const id = `group-${++groupSeq}`;
  const v = {
    state: el('dd', { className: 'group-state' }, '–'),
    protocol: el('dd', {}, '–'),
    memberCount: el('dd', { className: 'num-inline' }, '–'),
    lag: el('span', { className: 'lag-total' }, '–'),
    members: makeTable('members-table', [['Client ID'], ['Host'], ['Partitions'], ['Member ID']]),
    // Lag comes right after the partition: on a phone the offsets behind
    // it may scroll out of view, the lag must not.
    offsets: makeTable('offsets-table', [['Topic'], ['Partition', true], ['Lag', true, 'lag'], ['Committed', true], ['End offset', true]]),
    legend: el('span', { className: 'fig-legend' }),
  };
  const chartBox = el('div', { className: 'mini-chart', role: 'img', 'aria-label': `Chart of the total lag of group ${name} over the last ten minutes` });
  v.article = el('article', { className: 'group', dataset: { group: name }, 'aria-labelledby': id },
    el('h3', { id }, name),
    el('dl', { className: 'group-facts' },
      el('div', {}, el('dt', {}, 'State'), v.state),
      el('div', {}, el('dt', {}, 'Protocol'), v.protocol),
      el('div', {}, el('dt', {}, 'Members'), v.memberCount),
      el('div', { className: 'fact-lag' }, el('dt', {}, 'Total lag'), el('dd', {}, v.lag, ' ', el('span', { className: 'muted small' }, 'messages'))),
    ),
    el('div', { className: 'group-body' },
      el('div', { className: 'group-tables' },
        el('h4', {}, 'Members'),
        scroller(`Members of ${name}`, v.members.table),
        el('h4', {}, 'Offsets and lag'),
        scroller(`Offsets of ${name}`, v.offsets.table),
      ),
      el('figure', { className: 'pl-figure' },
        el('figcaption', {}, el('span', { className: 'fig-title' }, 'Lag, last 10 minutes'), ' ', v.legend),
        chartBox),
    ),
  );
  // Keep groups sorted by name.
  let before = null;
  for (const [n, gv] of groupViews) if (n > name && (!before || n < before.name)) before = { name: n, gv };
  $('group-list').insertBefore(v.article, before ? before.gv.article : null);
  v.trend = new Trend(chartBox, v.legend, [{ key: 'lag', label: 'lag', color: 2 }], { fmt: fmtInt, axis: fmtCount, minMove: 1 });
  groupViews.set(name, v);
  return v;
}

function renderGroups(p) {
  const groups = Array.isArray(p.groups) ? p.groups : [];
  const seen = new Set();
  for (const g of groups) {
    seen.add(g.group);
    const v = groupViews.get(g.group) || makeGroup(g.group);
    v.state.textContent = g.state || '–';
    v.state.dataset.state = g.state || '';
    v.protocol.textContent = g.protocol || '–';
    const members = Array.isArray(g.members) ? g.members : [];
    v.memberCount.textContent = String(members.length);
    v.lag.textContent = plainInt(g.lag_total);
    v.lag.title = isNum(g.lag_total) ? `${fmtInt(g.lag_total)} messages behind` : 'unknown';
    v.members.tbody.replaceChildren(...(members.length ? members.map((m) => el('tr', {},
      el('th', { scope: 'row', className: 'mono' }, m.client_id || '–'),
      el('td', { className: 'mono' }, m.host || '–'),
      el('td', { className: 'mono' }, Array.isArray(m.partitions) && m.partitions.length ? m.partitions.join(', ') : 'none'),
      el('td', { className: 'mono muted member-id' }, m.member_id || '–'),
    )) : [emptyRow(4, 'No members.')]));
    const offs = Array.isArray(g.partitions) ? g.partitions : [];
    v.offsets.tbody.replaceChildren(...(offs.length ? offs.map((o) => el('tr', { className: o.lag > 0 ? 'lagging' : '' },
      el('th', { scope: 'row' }, o.topic),
      numCell(String(o.partition)),
      numCell(fmtInt(o.lag), 'lag'),
      // A negative committed offset is Kafka's "nothing committed yet".
      isNum(o.committed) && o.committed < 0 ? numCell('none', 'muted') : numCell(fmtInt(o.committed)),
      numCell(fmtInt(o.end)),
    )) : [emptyRow(5, 'No committed offsets.')]));
  }
  for (const [name, v] of groupViews) {
    if (seen.has(name)) continue;
    v.trend.remove();
    v.article.remove();
    groupViews.delete(name);
  }
  $('groups-empty').textContent = kafkaDown(p) ? 'Kafka is unreachable — see Brokers.' : 'No consumer groups.';
  $('groups-empty').hidden = groups.length > 0;
}

function lagPoints(history, group) {
  return (Array.isArray(history) ? history : []).filter((h) => h && h.group === group).map((h) => ({ t: h.t, lag: h.lag }));
}

// ---- dead letters ------------------------------------------------------------------------

function renderDeadLetters(p) {
  const d = p.dead_letters || {};
  $('dlq-total').textContent = fmtInt(d.total);
  $('dlq-rate').textContent = isNum(d.per_s) ? `${dec2.format(d.per_s)}/s` : '–';
  const reasons = Array.isArray(d.by_reason) ? d.by_reason : [];
  let max = 0;
  let sum = 0;
  for (const r of reasons) {
    if (r.count > max) max = r.count;
    sum += r.count || 0;
  }
  $('reason-rows').replaceChildren(...reasons.map((r) => {
    const bar = el('span', { className: 'bar' });
    bar.style.width = `${max > 0 ? Math.max(1, (100 * r.count) / max) : 0}%`;
    const share = sum > 0 ? Math.round((100 * r.count) / sum) : 0;
    return el('tr', { dataset: { reason: r.reason } },
      el('th', { scope: 'row', className: 'mono' }, r.reason),
      numCell(plainInt(r.count), 'count'),
      el('td', { className: 'col-bar' },
        el('span', { className: 'bar-track', 'aria-hidden': 'true' }, bar),
        el('span', { className: 'bar-pct' }, `${share}%`)),
    );
  }));
  $('reasons-body').hidden = reasons.length === 0;
  $('reasons-empty').hidden = reasons.length > 0;

  const latest = Array.isArray(d.latest) ? d.latest : [];
  $('latest-rows').replaceChildren(...(latest.length ? latest.map((r) => {
    // raw arrives escaped; it is shown as text, never parsed as markup.
    const code = el('code', { className: 'raw' });
    code.textContent = r.raw ?? '';
    return el('tr', {},
      el('td', {}, timeEl(r.received_at)),
      el('td', { className: 'mono' }, r.topic || '–'),
      numCell(isNum(r.partition) ? String(r.partition) : '–'),
      numCell(isNum(r.offset) ? String(r.offset) : '–'),
      el('td', { className: 'mono' }, r.reason || '–'),
      el('td', { className: 'detail' }, r.detail || ''),
      el('td', { className: 'raw-cell' }, code),
    );
  }) : [emptyRow(7, 'No rejected records.')]));
}

// ---- database -------------------------------------------------------------------------------

function renderTables(p) {
  const err = typeof p.database_error === 'string' && p.database_error ? `Database: ${p.database_error}` : '';
  for (const id of ['db-error', 'dlq-error']) {
    $(id).textContent = err;
    $(id).hidden = !err;
  }
  const tables = Array.isArray(p.tables) ? p.tables : [];
  $('table-rows').replaceChildren(...(tables.length ? tables.map((t) => el('tr', { dataset: { table: t.name } },
    el('th', { scope: 'row', className: 'mono' }, t.name),
    el('td', { className: 'num', title: isNum(t.size_bytes) ? `${fmtInt(t.size_bytes)} bytes` : '' }, fmtBytes(t.size_bytes)),
    el('td', {
      className: `num rows${t.rows_exact ? '' : ' approx'}`,
      dataset: { rows: isNum(t.rows) ? String(t.rows) : '', exact: String(t.rows_exact === true) },
      title: t.rows_exact ? 'exact count' : 'PostgreSQL\'s live row count (pg_stat_user_tables.n_live_tup), not a scan',
    }, t.rows_exact ? fmtInt(t.rows) : `≈ ${fmtCount(t.rows)}`),
  )) : [emptyRow(3, 'No tables.')]));
}

// ---- market-data feeds ----------------------------------------------------------------------

function renderFeeds(p) {
  const feeds = Array.isArray(p.feeds) ? p.feeds : [];
  $('feeds').hidden = feeds.length === 0;
  const rows = feeds.map((f) => {
    const since = f.state === 'connected' && f.connected_since && !f.connected_since.startsWith('0001-') ? timeEl(f.connected_since) : '–';
    const age = isNum(f.last_message_age_s) ? `${f.last_message_age_s < 10 ? f.last_message_age_s.toFixed(1) : plainInt(Math.round(f.last_message_age_s))} s ago` : 'none yet';
    const state = el('td', { className: 'feed-state', title: f.last_error ? `last error: ${f.last_error}` : '' }, f.state || '–');
    state.dataset.state = f.state || '';
    return el('tr', { className: 'feed-row' },
      el('th', { scope: 'row' }, f.source || '–'), state, el('td', {}, since),
      numCell(fmtRate(f.messages_per_s)), numCell(age), numCell(plainInt(f.reconnects || 0)), numCell(plainInt(f.errors || 0)));
  });
  $('feed-rows').replaceChildren(...rows);
}

// ---- scheduler and disk ----------------------------------------------------------------------

function renderSummary(p) {
  const failed = isNum(p.dag_runs_failed_24h) ? p.dag_runs_failed_24h : null;
  const link = $('failed-runs');
  link.dataset.count = failed == null ? '' : String(failed);
  $('failed-runs-count').textContent = failed == null ? '–' : plainInt(failed);
  link.title = failed == null ? 'unknown: the database did not answer' : 'See the runs on the DAGs page';

  const d = p.data_dir && typeof p.data_dir === 'object' ? p.data_dir : null;
  $('disk-size').hidden = !d;
  $('disk-free').hidden = !d;
  if (!d) return;
  $('disk-size-value').textContent = fmtBytes(d.size_bytes);
  $('disk-size').title = `${d.path}: ${fmtInt(d.size_bytes)} bytes on disk${d.sized_at ? `, measured ${fmtTime(d.sized_at)}` : ''}${d.error ? ` (${d.error})` : ''}`;
  const free = $('disk-free');
  const total = isNum(d.total_bytes) && d.total_bytes > 0 ? d.total_bytes : null;
  const share = total ? Math.round((100 * d.free_bytes) / total) : null;
  free.dataset.low = String(d.low === true);
  $('disk-free-value').textContent = total
    ? `${d.low ? '⚠ ' : ''}${fmtBytes(d.free_bytes)} of ${fmtBytes(total)} (${share}%)${d.low ? ' — low' : ''}`
    : '–';
  free.title = d.low ? 'Below 10% or 5 GB free: PostgreSQL stops accepting writes when the disk fills.' : 'Free space on the data directory\'s disk';
}

// ---- applying snapshots ----------------------------------------------------------------------

/**
 * Renders a snapshot. full: its histories are complete (from /api/pipeline)
 * and replace the charts; otherwise they hold new points to append.
 */
function apply(p, full) {
  if (!p || typeof p !== 'object') return;
  current = p;
  const gen = $('generated-at');
  gen.dateTime = p.generated_at || '';
  gen.textContent = p.generated_at ? fmtTime(p.generated_at) : '–';
  gen.title = p.generated_at ? fmtDateTime(p.generated_at) : '';
  renderBrokers(p);
  renderTopics(p);
  renderGroups(p);
  renderDeadLetters(p);
  renderTables(p);
  renderSummary(p);
  renderFeeds(p);

  const proc = Array.isArray(p.processor_history) ? p.processor_history : [];
  for (const c of procCharts) (full ? c.set(proc) : c.add(proc));
  $('processor-empty').hidden = procCharts[0].points.length > 0;
  for (const [name, v] of groupViews) {
    const pts = lagPoints(p.lag_history, name);
    if (full) v.trend.set(pts);
    else v.trend.add(pts);
  }
  $('loading').hidden = true;
  window.stockpipe.loaded = true;
}

async function load() {
  try {
    apply(await fetchJSON('/api/pipeline'), true);
    showError('');
  } catch (err) {
    showError(`Could not load the pipeline state: ${err.message}`);
  }
}

// Open the stream first and hold its events until the first load is in, so
// nothing that happens in between is lost.
let ready = false;
const held = [];
function onPipeline(p) {
  if (!ready) {
    held.push(p);
    return;
  }
  apply(p, false);
  window.stockpipe.updates++;
}

async function loadThenFlush() {
  ready = false;
  await load();
  ready = true;
  for (const p of held.splice(0)) onPipeline(p);
}

openStream('/api/stream?pipeline=1', {
  pipeline: onPipeline,
  reconnected: () => { loadThenFlush(); },
});

await loadThenFlush();
