// The web console in a real browser (run by ./test, which starts the server). Through the
// console only: bad SQL is shown at its line, a good app is validated and deployed from the
// editor, and while this script appends to the app's input files the job's records_in grows in
// the job list twice over; the plan graph (with a join's side lane) and the per-partition
// watermark table render. Env: VELO_URL (the server), VELO_WORK (a temp dir for the files),
// CHROMIUM (the browser), VELO_CONSOLE_SCREENSHOT (where to save a screenshot, optional).
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.VELO_URL;
const work = process.env.VELO_WORK;
const screenshot = process.env.VELO_CONSOLE_SCREENSHOT;
if (!url || !work) throw new Error('VELO_URL and VELO_WORK must be set (run ci/console/test)');

const WAIT_MS = 30_000; // for any one thing to show: CI machines are slow
const started = Date.now();
let step = 'starting';
// A bound on the whole run, naming the step it was stuck in (./test kills it at 110 s).
setTimeout(() => {
  console.error(`\nFAILED: the test ran over 100 s, while ${step}`);
  process.exit(1); // playwright closes the browser on exit
}, 100_000).unref();
const say = (what) => {
  step = what;
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);
};

// ------------------------------------------------------------------------------------------
// The input files, and a writer that keeps them growing while the browser watches.

const clicks = join(work, 'clicks.jsonl');
const views = join(work, 'views.jsonl');
const pages = ['/home', '/pricing', '/docs', '/blog', '/signup'];
let clock = Date.now() - 15_000; // event time: 10 s of history first, then about wall time
let n = 0;

// Appends `count` clicks (and a view for every other one), `step` ms of event time apart;
// event time only ever grows, since the views allow no disorder.
function grow(count, step) {
  const c = [];
  const v = [];
  for (let i = 0; i < count; i += 1, n += 1) {
    clock = step ? clock + step : Math.max(clock + 1, Date.now() - 500);
    const page = pages[n % pages.length];
    c.push(JSON.stringify({ page, user_id: n % 7, ts: clock }));
    if (n % 2 === 0) v.push(JSON.stringify({ page, ad: `ad-${n % 3}`, ts: clock }));
  }
  appendFileSync(clicks, `${c.join('\n')}\n`);
  appendFileSync(views, `${v.join('\n')}\n`);
}

writeFileSync(clicks, '');
writeFileSync(views, '');
grow(100, 100);

const sql = `-- Clicks per page over 10-second windows, from a file that keeps growing.
CREATE STREAM clicks (page VARCHAR, user_id BIGINT, ts BIGINT) WITH (
  'clicks.type' = 'file_source', 'clicks.path' = '${clicks}', 'clicks.watch' = 'true',
  'clicks.event.time.field' = 'ts', 'clicks.watermark.max_out_of_orderness' = '2s');
CREATE STREAM views (page VARCHAR, ad VARCHAR, ts BIGINT) WITH (
  'views.type' = 'file_source', 'views.path' = '${views}', 'views.watch' = 'true',
  'views.event.time.field' = 'ts');

CREATE STREAM clicks_per_page AS
  SELECT page, COUNT(*) AS clicks, _window_end
  FROM clicks WHERE user_id > 0
  GROUP BY page WINDOW TUMBLING(ts, 10s)
  WITH ('clicks_per_page.type' = 'file_sink', 'clicks_per_page.path' = '${join(work, 'per_page.jsonl')}',
        'late.data.strategy' = 'dead_letter', 'late.data.dlq.path' = '${join(work, 'late.jsonl')}');

-- Each view joined with the clicks on its page in the next 5 seconds (a join of two streams).
CREATE STREAM clicked_views AS
  SELECT v.ad, COUNT(*) AS views, COUNT(c.user_id) AS clicks, _window_end
  FROM views v LEFT JOIN clicks c
    ON v.page = c.page AND c.ts BETWEEN v.ts AND v.ts + INTERVAL '5' SECOND
  GROUP BY v.ad, TUMBLE(v.ts, INTERVAL '10' SECOND)
  WITH ('clicked_views.type' = 'file_sink', 'clicked_views.path' = '${join(work, 'clicked.jsonl')}',
        'late.data.strategy' = 'dead_letter', 'late.data.dlq.path' = '${join(work, 'late_views.jsonl')}');
`;

// The error the server gives for this: unknown column 'idd', at line 2, column 30.
const bad = `CREATE STREAM clicks (id BIGINT) WITH ('clicks.type' = 'file_source', 'clicks.path' = '${clicks}');
CREATE STREAM oops AS SELECT idd FROM clicks;`;

// ------------------------------------------------------------------------------------------
// Helpers.

function check(ok, message) {
  if (!ok) throw new Error(message);
}

// Polls `get` until `ok` holds of its value, or fails saying what it waited for and what it saw.
async function until(what, get, ok, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await get();
      if (ok(last)) return last;
    } catch (e) {
      last = `(${e.message.split('\n')[0]})`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}; last saw: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function apiJob(name) {
  const res = await fetch(`${url}/api/v1/jobs/${encodeURIComponent(name)}`);
  return res.json();
}

// ------------------------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
let writer;
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(WAIT_MS);
  // A script error or a failed asset is a failure even when the page still looks fine.
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // The browser logs every 4xx as a console error, and a 400 for bad SQL is expected: answers
  // are judged by status instead (the assets must load, and no call may fail on the server).
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console error: ${m.text()}`);
  });
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.status() >= 500 || (r.status() >= 400 && !path.startsWith('/api/'))) problems.push(`${r.status()} for ${path}`);
  });

  say('opening the console');
  await page.goto(url);
  await page.getByTestId('server-status').filter({ hasText: 'connected' }).waitFor();
  await page.locator('#jobs-empty').waitFor();

  say('typing a bad statement and validating it');
  const editor = page.getByTestId('sql-editor');
  await editor.click();
  await editor.pressSequentially(bad);
  await page.getByTestId('validate').click();
  const where = await page.getByTestId('sql-error-where').textContent();
  check(where.trim() === 'line 2, column 30', `Validate shows the error at "${where}", not at line 2, column 30`);
  const message = await page.getByTestId('sql-error-message').textContent();
  check(message.includes("'idd'"), `the error message does not name the bad column: "${message}"`);
  const marked = await page.locator('[data-testid="gutter-line"][data-error="true"]').allTextContents();
  check(marked.length === 1 && marked[0] === '2', `the gutter marks lines [${marked}], not line 2 alone`);
  check(await page.locator('#sql-band').isVisible(), 'no band marks the bad line in the editor');

  say('validating the good app');
  await editor.fill(sql);
  check((await page.locator('[data-testid="gutter-line"][data-error="true"]').count()) === 0,
    'the error mark stays in the gutter after the SQL changed');
  await page.getByTestId('validate').click();
  await page.getByTestId('sql-valid').waitFor();
  const planned = await page.getByTestId('sql-result').getByTestId('plan-graph').count();
  check(planned === 2, `Validate drew ${planned} plan graphs, not one per job (2)`);

  say('deploying it as app "clickstream"');
  await page.getByTestId('app-name').fill('clickstream');
  await page.getByTestId('deploy').click();
  await page.getByTestId('sql-deployed').waitFor();
  writer = setInterval(() => grow(8), 400); // about 20 records a second

  say('watching records_in of clicks_per_page grow in the job list');
  const row = page.locator('tr[data-job="clicks_per_page"]');
  await row.waitFor();
  const cell = row.getByTestId('job-records-in');
  const recordsIn = async () => {
    const [value, text] = [await cell.getAttribute('data-value'), await cell.textContent()];
    // What is shown must be the number, not just what a script could read.
    check(Number(text.replace(/,/g, '')) === Number(value), `records_in shows "${text}" for ${value}`);
    return Number(value);
  };
  const first = await until('records_in > 0', recordsIn, (v) => v > 0);
  const second = await until(`records_in past ${first}`, recordsIn, (v) => v > first);
  const third = await until(`records_in past ${second}`, recordsIn, (v) => v > second);
  console.log(`  records_in: ${first} → ${second} → ${third}`);
  const status = await row.getByTestId('job-status').textContent();
  check(status.trim() === 'running', `clicks_per_page is "${status}", not running`);

  say('checking the selected job: plan graph, watermarks, workers');
  await row.click();
  const detail = page.getByTestId('job-detail');
  await detail.getByTestId('job-title').filter({ hasText: /^clicks_per_page$/ }).waitFor();
  const job = await apiJob('clicks_per_page');
  const stages = await until('one plan box per operator', () => detail.getByTestId('plan-stage').count(),
    (c) => c === job.operators.length);
  check(stages === 3, `clicks_per_page has ${stages} operators, expected filter, aggregate, project`);
  const kinds = await detail.getByTestId('plan-stage').evaluateAll((gs) => gs.map((g) => g.dataset.operator));
  check(kinds.join() === '0-filter,1-aggregate,2-project', `the plan's boxes are ${kinds}`);
  await detail.getByTestId('plan-source').filter({ hasText: 'clicks' }).waitFor();
  await until('a watermark row per input partition', () => detail.getByTestId('watermark-row').count(), (c) => c >= 1);
  const mark = await detail.getByTestId('watermark-row').first().locator('td').nth(2).textContent();
  check(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/.test(mark.trim()), `the watermark cell shows "${mark}", not a time`);
  const workers = await detail.getByTestId('workers').locator('tbody tr').count();
  check(workers === 2, `the workers table has ${workers} rows for --partitions 2`);

  say('a bad line and a late record show as errors and dead letters');
  appendFileSync(clicks, `this line is not JSON\n${JSON.stringify({ page: '/home', user_id: 1, ts: clock - 3_600_000 })}\n`);
  await until('the bad record in the dead letters', () => detail.getByTestId('dead-letter').allTextContents(),
    (rows) => rows.some((r) => r.includes('this line is not JSON')) && rows.some((r) => r.includes('late')));
  await until('errors = 1', () => detail.getByTestId('detail-errors').getAttribute('data-value'), (v) => v === '1');

  say('the join: a side lane into the merge, a watermark row per input');
  await page.locator('tr[data-job="clicked_views"]').click();
  await detail.getByTestId('job-title').filter({ hasText: /^clicked_views$/ }).waitFor();
  const sources = await until('two source boxes (views, and clicks on the side lane)',
    () => detail.getByTestId('plan-source').allTextContents(), (s) => s.length === 2);
  check(sources.some((s) => s.includes('views')) && sources.some((s) => s.includes('clicks')),
    `the join's source boxes are ${JSON.stringify(sources)}`);
  await until('watermarks of both inputs', () => detail.getByTestId('watermark-row').count(), (c) => c === 2);
  // A minute of the sparkline would take a minute; a few seconds show it moving.
  await until('a sparkline of several samples', () => detail.getByTestId('sparkline-in').getAttribute('points'),
    (p) => p && p.split(' ').length >= 8);
  await until('records out', () => detail.getByTestId('detail-records-out').getAttribute('data-value'), (v) => Number(v) > 0);

  check(problems.length === 0, `the page reported problems:\n  ${problems.join('\n  ')}`);
  if (screenshot) {
    say(`saving a screenshot to ${screenshot}`);
    // The app from its first line, as a reader would scroll it.
    await editor.evaluate((e) => { e.scrollTop = 0; e.dispatchEvent(new Event('scroll')); });
    await page.screenshot({ path: screenshot, fullPage: true });
  }

  say('stopping clicked_views, then deleting the app');
  await detail.getByTestId('job-stop').click();
  await until('clicked_views stopped', () => detail.getByTestId('job-status').textContent(), (t) => t === 'stopped');
  page.once('dialog', (d) => d.accept()); // "Delete app clickstream?"
  await detail.getByTestId('app-delete').click();
  await until('an empty job list', () => page.getByTestId('job-row').count(), (c) => c === 0);
  check(await page.locator('#jobs-empty').isVisible(), 'no "no jobs" line once the app is gone');
  const apps = await (await fetch(`${url}/api/v1/apps`)).json();
  check(apps.length === 0, `the server still has apps: ${JSON.stringify(apps)}`);

  check(problems.length === 0, `the page reported problems:\n  ${problems.join('\n  ')}`);
  say('passed');
} catch (e) {
  console.error(`\nFAILED while ${step}:\n  ${e.message}`);
  if (problems.length) console.error(`the page reported:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
} finally {
  clearInterval(writer);
  await browser.close();
}
