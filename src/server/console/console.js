// The velostream web console: one page over the server's REST API (/api/v1), with no framework
// and no build step, since the server embeds this file as it is. Once a second it reads the job
// list, keeps a minute of samples per job for the sparkline (the API's rates are over 10 s; the
// sparkline shows the shape of the last minute) and redraws the selected job.
'use strict';

const POLL_MS = 1000;
const SAMPLES = 60;

// ---------------------------------------------------------------------------------------------
// HTML that escapes by default. Job names, errors, SQL and dead-letter records all come from
// users, so every interpolated value is escaped unless it is itself the output of `html`.

class Safe {
  constructor(text) { this.text = text; }
  toString() { return this.text; }
}

const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escape = (v) => String(v).replace(/[&<>"']/g, (c) => ENTITIES[c]);

function piece(v) {
  if (v instanceof Safe) return v.text;
  if (Array.isArray(v)) return v.map(piece).join('');
  if (v === null || v === undefined || v === false) return '';
  return escape(v);
}

function html(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => { out += piece(v) + strings[i + 1]; });
  return new Safe(out);
}

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// Formatting.

const count = (n) => (n ?? 0).toLocaleString('en-US');
// Bytes in binary units: state sizes are estimates, so one decimal is enough.
function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n ?? 0;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
const rate = (r) => (r ?? 0).toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

// Event times are epoch ms; shown in UTC so that every viewer reads the same clock.
function time(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().replace('T', ' ').replace('Z', '');
}

function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = ms / 1000;
  if (Math.abs(s) < 1) return `${Math.round(ms)} ms`;
  if (Math.abs(s) < 60) return `${s.toFixed(1)} s`;
  if (Math.abs(s) < 3600) return `${(s / 60).toFixed(1)} min`;
  if (Math.abs(s) < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400).toLocaleString('en-US')} d`;
}

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

const trunc = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

// ---------------------------------------------------------------------------------------------
// The API.

async function api(method, path, body, type = 'text/plain') {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = body;
    init.headers['Content-Type'] = type;
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  return { ok: res.ok, status: res.status, data };
}

const jobPath = (name) => `/api/v1/jobs/${encodeURIComponent(name)}`;
const appPath = (name) => `/api/v1/apps/${encodeURIComponent(name)}`;

// ---------------------------------------------------------------------------------------------
// State: the latest job list, the selected job and, per job, the last minute of samples.

const state = {
  jobs: [],
  selected: location.hash.startsWith('#job=') ? decodeURIComponent(location.hash.slice(5)) : null,
  history: new Map(), // job name -> [{t, in, out}], oldest first
  planKey: null, // what the drawn plan was drawn from, to redraw only when it changes
  errorLine: null, // the SQL line the last validation error points at
};

function sample(jobs) {
  const t = performance.now();
  const names = new Set(jobs.map((j) => j.name));
  for (const name of state.history.keys()) if (!names.has(name)) state.history.delete(name);
  for (const job of jobs) {
    const points = state.history.get(job.name) || [];
    points.push({ t, in: job.records_in, out: job.records_out });
    // One more sample than points on the line: the line shows differences.
    while (points.length > SAMPLES + 1) points.shift();
    state.history.set(job.name, points);
  }
}

async function refresh() {
  try {
    const { ok, status, data } = await api('GET', '/api/v1/jobs');
    if (!ok) throw new Error(`HTTP ${status}`);
    state.jobs = data;
    sample(data);
    setServer(true, `connected · ${data.length} job${data.length === 1 ? '' : 's'}`);
  } catch (e) {
    setServer(false, `server unreachable (${e.message})`);
  }
  renderJobs();
  renderJob();
}

// A loop rather than setInterval: a slow answer delays the next poll instead of piling up.
async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

function setServer(up, text) {
  const pill = $('server-status');
  pill.textContent = text;
  pill.className = `pill ${up ? 'up' : 'down'}`;
}

function select(name) {
  state.selected = name;
  state.planKey = null;
  history.replaceState(null, '', name ? `#job=${encodeURIComponent(name)}` : '#');
  renderJobs();
  renderJob();
}

// ---------------------------------------------------------------------------------------------
// The job list. Rows are kept per job and updated in place, so that a click is never lost to
// a row replaced between mouse down and up.

const JOB_CELLS = ['name', 'app', 'status', 'records-in', 'records-out', 'rate-in', 'rate-out'];

function renderJobs() {
  const body = $('jobs-body');
  const rows = new Map([...body.rows].map((r) => [r.dataset.job, r]));
  for (const job of state.jobs) {
    let row = rows.get(job.name);
    if (!row) {
      row = document.createElement('tr');
      row.dataset.job = job.name;
      row.dataset.testid = 'job-row';
      row.tabIndex = 0;
      row.innerHTML = JOB_CELLS.map((c) => {
        const num = c.startsWith('records') || c.startsWith('rate') ? ' class="num"' : '';
        return `<td data-testid="job-${c}"${num}></td>`;
      }).join('');
      body.append(row);
    }
    rows.delete(job.name);
    const cell = (c) => row.querySelector(`[data-testid="job-${c}"]`);
    cell('name').textContent = job.name;
    cell('app').textContent = job.app;
    cell('status').innerHTML = badge(job.status).text;
    setCount(cell('records-in'), job.records_in, count(job.records_in));
    setCount(cell('records-out'), job.records_out, count(job.records_out));
    setCount(cell('rate-in'), job.rates.records_in_per_second, rate(job.rates.records_in_per_second));
    setCount(cell('rate-out'), job.rates.records_out_per_second, rate(job.rates.records_out_per_second));
    row.classList.toggle('selected', job.name === state.selected);
  }
  for (const gone of rows.values()) gone.remove();
  $('jobs-empty').hidden = state.jobs.length > 0;
}

// The raw number goes in data-value too, for scripts (and tests) that read the page.
function setCount(el, value, text) {
  el.textContent = text;
  el.dataset.value = String(value ?? 0);
}

const badge = (status) => html`<span class="badge ${status}">${status}</span>`;

$('jobs-body').addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-job]');
  if (row) select(row.dataset.job);
});
$('jobs-body').addEventListener('keydown', (e) => {
  const row = e.target.closest('tr[data-job]');
  if (row && (e.key === 'Enter' || e.key === ' ')) {
    e.preventDefault();
    select(row.dataset.job);
  }
});

// ---------------------------------------------------------------------------------------------
// The selected job.

function renderJob() {
  const job = state.jobs.find((j) => j.name === state.selected);
  if (!job && state.selected === null && state.jobs.length) {
    // Nothing chosen yet: show the first job rather than an empty panel.
    select(state.jobs[0].name);
    return;
  }
  $('job-none').hidden = Boolean(job);
  $('job-view').hidden = !job;
  if (!job) return;

  $('job-title').textContent = job.name;
  const status = $('job-status');
  status.textContent = job.status;
  status.className = `badge ${job.status}`;
  $('job-app').textContent = job.app;
  $('job-stop').disabled = job.status !== 'running';
  const error = $('job-error');
  error.hidden = !job.error;
  error.textContent = job.error ? `failed: ${job.error}` : '';

  $('job-stats').innerHTML = stats(job).text;
  $('sparkline').innerHTML = sparkline(state.history.get(job.name) || []).text;

  // The plan never changes while a job runs: redraw it only for another job.
  const key = JSON.stringify([job.name, job.operators]);
  if (key !== state.planKey) {
    state.planKey = key;
    $('job-plan').innerHTML = plan(job.operators, job.sources, job.name).text;
  }
  $('job-inputs').innerHTML = html`${inputs(job.inputs)}${kafkaLag(job.kafka_lag || [])}`.text;
  $('job-workers').innerHTML = workers(job.workers).text;
  $('job-checkpoint').innerHTML = checkpoint(job.checkpoint).text;
  $('job-dead-letters').innerHTML = deadLetters(job.dead_letters).text;
}

function stats(job) {
  const cards = [
    ['records in', count(job.records_in), 'records-in', job.records_in],
    ['records out', count(job.records_out), 'records-out', job.records_out],
    ['in / s', rate(job.rates.records_in_per_second), 'rate-in'],
    ['out / s', rate(job.rates.records_out_per_second), 'rate-out'],
    ['errors', count(job.errors), 'errors', job.errors, job.errors > 0],
    ['late', count(job.late), 'late', job.late, job.late > 0],
    ['state keys', count(job.state_keys), 'state-keys', job.state_keys],
    ['state size', bytes(job.state_bytes), 'state-bytes', job.state_bytes],
    ['partitions', count(job.partitions), 'partitions', job.partitions],
    ['watermark (UTC)', time(job.watermark), 'watermark', job.watermark],
  ];
  return html`${cards.map(([label, text, id, value, warn]) => html`
    <div class="stat${warn ? ' warn' : ''}">
      <div class="label">${label}</div>
      <div class="value${id === 'watermark' ? ' small' : ''}" data-testid="detail-${id}"
        data-value="${value ?? ''}">${text}</div>
    </div>`)}`;
}

// Records per second between consecutive samples, newest at the right edge.
function sparkline(points) {
  const W = 600;
  const H = 90;
  const rates = (key) => points.slice(1).map((p, i) => {
    const prev = points[i];
    const seconds = (p.t - prev.t) / 1000;
    return seconds > 0 ? Math.max(0, (p[key] - prev[key]) / seconds) : 0;
  });
  const ins = rates('in');
  const outs = rates('out');
  if (!ins.length) return html`<p class="muted">Collecting samples…</p>`;
  const max = Math.max(1, ...ins, ...outs);
  const step = W / (SAMPLES - 1);
  const xy = (values) => values.map((v, i) => {
    const x = W - (values.length - 1 - i) * step;
    const y = H - 4 - (v / max) * (H - 8);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(' ');
  const last = (values) => values[values.length - 1];
  return html`
    <svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img"
      aria-label="records per second over the last minute">
      <line x1="0" y1="${H - 4}" x2="${W}" y2="${H - 4}" class="axis"/>
      <polyline class="line-in" points="${xy(ins)}" data-testid="sparkline-in"/>
      <polyline class="line-out" points="${xy(outs)}"/>
    </svg>
    <div class="legend">
      <span><i class="key-in"></i>in ${rate(last(ins))}/s</span>
      <span><i class="key-out"></i>out ${rate(last(outs))}/s</span>
      <span class="muted">peak ${rate(max)}/s over ${ins.length} s</span>
    </div>`;
}

function inputs(list) {
  if (!list.length) return html`<p class="muted">No event time yet.</p>`;
  return html`
    <table class="grid compact" data-testid="watermark-table">
      <thead><tr>
        <th>source</th><th class="num">partition</th><th>watermark</th><th>newest event</th>
        <th class="num">behind newest</th><th class="num">behind wall</th>
      </tr></thead>
      <tbody>${list.map((i) => html`
        <tr data-testid="watermark-row">
          <td>${i.source ?? '?'}</td><td class="num">${i.partition}</td>
          <td class="mono">${time(i.watermark)}</td><td class="mono">${time(i.newest_event)}</td>
          <td class="num">${duration(i.lag_behind_newest_ms)}</td>
          <td class="num">${duration(i.lag_behind_wall_ms)}</td>
        </tr>`)}</tbody>
    </table>`;
}

// Records between each Kafka partition's read position and its end.
function kafkaLag(list) {
  if (!list.length) return html``;
  return html`
    <table class="grid compact" data-testid="kafka-lag-table">
      <thead><tr><th>Kafka topic</th><th class="num">partition</th><th class="num">consumer lag (records)</th></tr></thead>
      <tbody>${list.map((l) => html`
        <tr><td>${l.topic}</td><td class="num">${l.partition}</td><td class="num">${count(l.records)}</td></tr>`)}</tbody>
    </table>`;
}

// Each worker's state keys as a bar against the largest, so a skewed key shows at a glance.
function workers(list) {
  if (!list.length) return html`<p class="muted">No workers.</p>`;
  const max = Math.max(1, ...list.map((w) => w.state_keys));
  return html`
    <table class="grid compact">
      <thead><tr><th class="num">worker</th><th class="num">state keys</th><th></th><th class="num">state size</th><th class="num">late</th></tr></thead>
      <tbody>${list.map((w) => html`
        <tr>
          <td class="num">${w.partition}</td><td class="num">${count(w.state_keys)}</td>
          <td class="bar-cell"><span class="bar" style="width:${((w.state_keys / max) * 100).toFixed(0)}%"></span></td>
          <td class="num">${bytes(w.state_bytes)}</td><td class="num">${count(w.late)}</td>
        </tr>`)}</tbody>
    </table>`;
}

function checkpoint(c) {
  if (!c) return html`<p class="muted">None yet (checkpoints are taken with <code>--state-dir</code>).</p>`;
  return html`<p>#${c.id} at <span class="mono">${time(c.at)}</span> UTC · took ${duration(c.seconds * 1000)} · ${bytes(c.bytes)}</p>`;
}

function deadLetters(list) {
  if (!list.length) return html`<p class="muted">None.</p>`;
  // A bad record names its source and location; a late one names its job.
  return html`
    <table class="grid compact dead">
      <thead><tr><th>kind</th><th>where</th><th>reason</th><th>record</th></tr></thead>
      <tbody>${[...list].reverse().map((d) => {
        const late = d.source === undefined && d.job !== undefined;
        const where = late ? d.job : [d.source, d.location].filter((x) => x !== undefined && x !== null).join(' · ');
        const record = typeof d.record === 'string' ? d.record : JSON.stringify(d.record);
        return html`
          <tr data-testid="dead-letter">
            <td><span class="badge ${late ? 'late' : 'bad'}">${late ? 'late' : 'bad'}</span></td>
            <td>${where}</td><td>${d.reason ?? ''}</td>
            <td class="mono record" title="${record ?? ''}">${trunc(record ?? '', 120)}</td>
          </tr>`;
      })}</tbody>
    </table>`;
}

// ---------------------------------------------------------------------------------------------
// The plan as a graph. Input 0 is the main lane: its source, then its stages in order, then the
// job's output. Inputs 1.. (the other side of a join, a UNION's other branches) are lanes below,
// each ending under the main lane's merge stage, into which an arrow leads.

const BOX_W = 142;
const BOX_H = 66;
const GAP_X = 28;
const GAP_Y = 30;
const PAD = 8;
let svgIds = 0;

const stageKind = (op) => op.operator.replace(/^\d+-/, '');

// `sources` names each input, the main one first: a side input may have no stages of its own.
function plan(operators, sources, output) {
  const lanes = sources.map((source) => ({ source, stages: [] }));
  for (const op of operators) lanes[op.input]?.stages.push(op);
  const [main, ...sides] = lanes;
  const mergeAt = main.stages.findIndex((s) => stageKind(s) === 'merge');

  // Column of the merge stage within the main lane (the source is column 0).
  const mergeCol = 1 + Math.max(0, mergeAt);
  // A side lane's last box sits one column left of the merge; a long side lane pushes the main
  // lane right.
  const shift = Math.max(0, ...sides.map((l) => l.stages.length + 1 - mergeCol));

  const boxes = [];
  const arrows = [];
  const at = (col, row) => ({ x: PAD + col * (BOX_W + GAP_X), y: PAD + row * (BOX_H + GAP_Y) });

  const mainBoxes = [
    { kind: 'source', title: main.source },
    ...main.stages.map((op) => ({ kind: 'stage', op })),
    { kind: 'output', title: output },
  ];
  mainBoxes.forEach((b, i) => {
    boxes.push({ ...b, ...at(shift + i, 0), lane: 0 });
    if (i > 0) arrows.push(hArrow(at(shift + i - 1, 0), at(shift + i, 0)));
  });
  const merge = at(shift + mergeCol, 0);

  sides.forEach((lane, k) => {
    const row = k + 1;
    const start = shift + mergeCol - (lane.stages.length + 1);
    const laneBoxes = [{ kind: 'source', title: lane.source }, ...lane.stages.map((op) => ({ kind: 'stage', op }))];
    laneBoxes.forEach((b, i) => {
      boxes.push({ ...b, ...at(start + i, row), lane: row });
      if (i > 0) arrows.push(hArrow(at(start + i - 1, row), at(start + i, row)));
    });
    // Right, then up into the merge box's bottom; lanes further down enter a little further left.
    const from = at(start + laneBoxes.length - 1, row);
    const x = merge.x + BOX_W / 2 - k * 12;
    const y = from.y + BOX_H / 2;
    arrows.push(`M${from.x + BOX_W},${y} H${x} V${merge.y + BOX_H + 2}`);
  });

  const cols = shift + mainBoxes.length;
  const width = PAD * 2 + cols * BOX_W + (cols - 1) * GAP_X;
  const height = PAD * 2 + (sides.length + 1) * BOX_H + sides.length * GAP_Y;
  const marker = `arrow-${(svgIds += 1)}`;
  return html`
    <div class="plan-scroll">
      <svg class="plan" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"
        style="min-width:${Math.round(width * 0.75)}px"
        role="img" aria-label="the job's plan" data-testid="plan-graph">
        <defs><marker id="${marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"
          markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>
        ${arrows.map((d) => html`<path class="edge" d="${d}" marker-end="url(#${marker})"/>`)}
        ${boxes.map(box)}
      </svg>
    </div>
    ${planTable(main, sides)}`;
}

// What fits in a box: no column indices (`page@0`), and a merge by its kind alone (its inputs
// are the lanes drawn into it).
function summary(op) {
  const detail = (op.detail || '').replace(/@\d+/g, '');
  return stageKind(op) === 'merge' ? detail.split(/[ ({]/)[0] : detail;
}

function hArrow(a, b) {
  const y = a.y + BOX_H / 2;
  return `M${a.x + BOX_W},${y} H${b.x - 2}`;
}

function box(b) {
  const tx = b.x + 10;
  if (b.kind !== 'stage') {
    return html`
      <g class="node ${b.kind}" data-testid="plan-${b.kind}">
        <title>${b.kind}: ${b.title}</title>
        <rect x="${b.x}" y="${b.y}" width="${BOX_W}" height="${BOX_H}" rx="10"/>
        <text x="${tx}" y="${b.y + 22}" class="kind">${b.kind === 'source' ? 'source' : 'output'}</text>
        <text x="${tx}" y="${b.y + 44}" class="name">${trunc(b.title, 16)}</text>
      </g>`;
  }
  const { op } = b;
  const stateful = op.state !== null && op.state !== undefined;
  const index = op.operator.match(/^\d+/)?.[0] ?? '';
  return html`
    <g class="node stage${stateful ? ' stateful' : ''}" data-testid="plan-stage" data-operator="${op.operator}">
      <title>${op.operator}: ${op.detail}${stateful ? `\nstate: ${op.state}\nbounded by: ${op.bounded_by}` : ''}</title>
      <rect x="${b.x}" y="${b.y}" width="${BOX_W}" height="${BOX_H}" rx="6"/>
      <text x="${tx}" y="${b.y + 19}" class="kind">${stageKind(op)}<tspan class="index"> #${index}</tspan></text>
      <text x="${tx}" y="${b.y + 37}" class="detail">${trunc(summary(op), 19)}</text>
      <text x="${tx}" y="${b.y + 55}" class="state">${stateful ? `◆ ${trunc(op.state, 18)}` : 'no state'}</text>
    </g>`;
}

// The boxes are small: the table under them gives every operator's detail (without column
// indices; hover for all of it), state and bound.
function planTable(main, sides) {
  const lanes = [main, ...sides];
  const rows = lanes.flatMap((lane, i) => lane.stages.map((op) => html`
    <tr data-testid="plan-row">
      <td>${i === 0 ? lane.source : `${lane.source} (side ${i})`}</td>
      <td class="mono">${op.operator}</td><td title="${op.detail}">${trunc((op.detail || '').replace(/@\d+/g, ''), 160)}</td>
      <td>${op.state ?? html`<span class="muted">none</span>`}</td>
      <td>${op.bounded_by ?? html`<span class="muted">—</span>`}</td>
    </tr>`));
  if (!rows.length) return html`<p class="muted">No stages: every record goes straight to the output.</p>`;
  return html`
    <table class="grid compact plan-table">
      <thead><tr><th>input</th><th>operator</th><th>detail</th><th>state</th><th>bounded by</th></tr></thead>
      <tbody>${rows}</tbody>
    </table>`;
}

// ---------------------------------------------------------------------------------------------
// Job actions.

$('job-stop').addEventListener('click', async () => {
  const name = state.selected;
  const button = $('job-stop');
  button.disabled = true;
  button.textContent = 'Stopping…';
  // The stop drains the job (sources stop, sinks flush) and answers when it has.
  const res = await api('POST', `${jobPath(name)}/stop`);
  button.textContent = 'Stop job';
  if (!res.ok) alert(`Stopping ${name}: ${res.data?.error ?? res.status}`);
  refresh();
});

$('app-delete').addEventListener('click', async () => {
  const job = state.jobs.find((j) => j.name === state.selected);
  if (!job || !confirm(`Delete app "${job.app}"? Its jobs are stopped and forgotten.`)) return;
  const res = await api('DELETE', appPath(job.app));
  if (!res.ok) alert(`Deleting ${job.app}: ${res.data?.error ?? res.status}`);
  select(null);
  refresh();
});

// ---------------------------------------------------------------------------------------------
// The SQL editor: a textarea with a line-number gutter; a band behind the text marks the line a
// validation error points at. `wrap="off"` keeps one text line per gutter line.

const editor = $('sql');
const LINE_PX = 20; // = line-height in console.css
const TOP_PX = 8; // = the textarea's padding-top

function renderGutter() {
  const lines = editor.value.split('\n').length;
  const nums = [];
  for (let n = 1; n <= lines; n += 1) {
    const error = n === state.errorLine;
    nums.push(html`<div data-line="${n}" data-testid="gutter-line"${error ? html` class="error" data-error="true"` : ''}>${n}</div>`);
  }
  $('sql-gutter').innerHTML = html`${nums}`.text;
  placeBand();
}

function placeBand() {
  const band = $('sql-band');
  band.hidden = state.errorLine === null;
  if (state.errorLine !== null) band.style.top = `${TOP_PX + (state.errorLine - 1) * LINE_PX - editor.scrollTop}px`;
  // The numbers sit in a box that takes no height of its own, moved with the text.
  $('sql-gutter').style.transform = `translateY(${-editor.scrollTop}px)`;
}

editor.addEventListener('input', () => {
  // The error was about the text as it was: its line may have moved.
  if (state.errorLine !== null) {
    state.errorLine = null;
    $('sql-result').classList.add('stale');
  }
  renderGutter();
});
editor.addEventListener('scroll', placeBand);
editor.addEventListener('keydown', (e) => {
  if (e.key === 'Tab' && !e.shiftKey) {
    // Indent instead of leaving the editor.
    e.preventDefault();
    editor.setRangeText('  ', editor.selectionStart, editor.selectionEnd, 'end');
    renderGutter();
  } else if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    validate();
  }
});

function showResult(content, kind) {
  const out = $('sql-result');
  out.className = kind;
  out.innerHTML = content.text;
}

// An error at its line: the gutter and band mark the line, the message says line:column and
// repeats the line with a caret under the column.
function showSqlError(err, what) {
  const line = Number.isInteger(err.line) ? err.line : null;
  state.errorLine = line;
  renderGutter();
  if (line !== null) {
    editor.scrollTop = Math.max(0, (line - 3) * LINE_PX);
    placeBand();
  }
  const text = line !== null ? editor.value.split('\n')[line - 1] ?? '' : null;
  const caret = err.column ? `${' '.repeat(Math.max(0, err.column - 1))}^` : '';
  showResult(html`
    <div class="error-box" data-testid="sql-error">
      <strong>${what} failed</strong>${line !== null
        ? html` at <span class="where" data-testid="sql-error-where">line ${line}, column ${err.column ?? '?'}</span>`
        : ''}${err.statement ? html` in statement <code>${err.statement}</code>` : ''}:
      <span data-testid="sql-error-message">${err.error}</span>
      ${text !== null ? html`<pre class="excerpt">${line} | ${text}\n${' '.repeat(String(line).length + 3)}${caret}</pre>` : ''}
    </div>`, 'failed');
}

function busy(on) {
  $('validate').disabled = on;
  $('deploy').disabled = on;
}

async function validate() {
  busy(true);
  try {
    const res = await api('POST', '/api/v1/sql/validate', editor.value);
    if (res.ok && res.data?.valid) {
      state.errorLine = null;
      renderGutter();
      const jobs = res.data.jobs;
      showResult(html`
        <p class="ok-box" data-testid="sql-valid">Valid: ${jobs.length} job${jobs.length === 1 ? '' : 's'}
          (${jobs.map((j) => j.name).join(', ')}). Nothing runs until you deploy.</p>
        ${jobs.map((j) => html`<h4>${j.name} <span class="muted">reads ${j.source}</span></h4>
          ${plan(j.operators, j.sources, j.name)}`)}`, 'valid');
    } else {
      showSqlError(res.data || {}, 'Validation');
    }
  } catch (e) {
    showResult(html`<p class="error-box">Validation failed: ${e.message}</p>`, 'failed');
  } finally {
    busy(false);
  }
}

async function deploy() {
  busy(true);
  try {
    const sql = editor.value;
    const name = $('app-name').value.trim();
    // With a name, the JSON body carries it; without, the server names the app app-N.
    const res = name
      ? await api('POST', '/api/v1/apps', JSON.stringify({ name, sql }), 'application/json')
      : await api('POST', '/api/v1/apps', sql);
    if (res.status === 201) {
      state.errorLine = null;
      renderGutter();
      const { app, jobs } = res.data;
      showResult(html`<p class="ok-box" data-testid="sql-deployed">Deployed app <strong>${app}</strong>
        with job${jobs.length === 1 ? '' : 's'} ${jobs.join(', ')}.</p>`, 'valid');
      if (jobs.length) select(jobs[0]);
      await refresh();
    } else if (res.status === 400 && res.data && 'line' in res.data) {
      showSqlError(res.data, 'Deploy');
    } else {
      state.errorLine = null;
      renderGutter();
      showResult(html`<p class="error-box" data-testid="sql-error">Deploy failed (${res.status}):
        ${res.data?.error ?? ''}</p>`, 'failed');
    }
  } catch (e) {
    showResult(html`<p class="error-box">Deploy failed: ${e.message}</p>`, 'failed');
  } finally {
    busy(false);
  }
}

$('validate').addEventListener('click', validate);
$('deploy').addEventListener('click', deploy);

renderGutter();
poll();
