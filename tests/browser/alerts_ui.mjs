// The alerts web UI in headless Debian Chromium, driven by playwright-core.
//
//   scripts/browser-test          # builds the fixture, installs what is missing, runs this
//   scripts/browser-test --docs   # and copies the screenshot to docs/alerts-ui.png
//
// Direct use: FIXTURE_BIN=<path to the alerts_ui_fixture example> node alerts_ui.mjs
// Optional: CHROMIUM (default /usr/bin/chromium), SCREENSHOT (default
// $TMPDIR/ha-pipeline-alerts-ui.png: a test never writes into the tree).
//
// Checks, in order: the page asks for the token and refuses a wrong one;
// with the right one it shows every seeded anomaly and draws the chart with
// anomaly markers and the device's health; a new anomaly inserted in the
// store appears in the table without a reload and is marked on the chart;
// no script error or CSP violation happened. Then saves a screenshot.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const fixtureBin = process.env.FIXTURE_BIN;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = resolve(process.env.SCREENSHOT || join(tmpdir(), 'ha-pipeline-alerts-ui.png'));
const TIMEOUT = 15000;

if (!fixtureBin) {
  console.error('FIXTURE_BIN is not set (scripts/browser-test sets it)');
  process.exit(2);
}

let passed = 0;
function check(cond, what) {
  if (!cond) throw new Error('FAILED: ' + what);
  passed += 1;
  console.log('ok - ' + what);
}

/** Starts the fixture and collects its announcements. */
function startFixture() {
  const child = spawn(fixtureBin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const info = { url: null, token: null, anomalies: [] };
  const waiters = [];
  lines.on('line', (line) => {
    const [word, ...rest] = line.split(' ');
    if (word === 'URL') info.url = rest[0];
    else if (word === 'TOKEN') info.token = rest[0];
    else if (word === 'ANOMALY') info.anomalies.push(rest.join('/'));
    for (const w of [...waiters]) {
      if (word === w.word) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(rest);
      }
    }
  });
  const next = (word) => new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`fixture did not print ${word}`)), 60000);
    waiters.push({ word, resolve: (v) => { clearTimeout(timer); res(v); } });
  });
  child.on('exit', (code, signal) => {
    for (const w of waiters) w.resolve(null);
    if (code && code !== 0) console.error(`fixture exited with ${code ?? signal}`);
  });
  return { child, info, next };
}

const rowSelector = (key) => `#anomalies tbody tr[data-key="${key}"]`;

async function main() {
  const fixture = startFixture();
  const userDataDir = mkdtempSync(join(tmpdir(), 'ha-alerts-chromium-'));
  let context;
  try {
    await fixture.next('READY');
    const { url, token, anomalies } = fixture.info;
    check(url && token && anomalies.length >= 5, `fixture up at ${url} with ${anomalies.length} seeded anomalies`);

    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      viewport: { width: 1440, height: 900 },
      deviceScaleFactor: 1,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(TIMEOUT);
    const problems = [];
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push('console error: ' + m.text());
    });
    // Nothing may leave the machine: no CDN, no fonts, no telemetry.
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.protocol !== 'data:' && u.host !== new URL(url).host) problems.push('external request: ' + r.url());
    });

    await page.goto(url);
    await page.waitForSelector('#login-form', { state: 'visible' });
    check(await page.isHidden('#app'), 'the data stays hidden until a token is given');

    await page.fill('#token', token + '-wrong');
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#login-error', { state: 'visible' });
    check(await page.isHidden('#app'), 'a wrong token is refused');
    problems.length = 0; // the refused request logs a 401 in the console, as it should

    await page.fill('#token', token);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#app', { state: 'visible' });
    check(await page.evaluate(() => sessionStorage.getItem('ha-alerts-token') !== null),
      'the token is kept in sessionStorage for the tab');

    for (const key of anomalies) await page.waitForSelector(rowSelector(key));
    const rows = await page.$$eval('#anomalies tbody tr', (trs) => trs.length);
    check(rows === anomalies.length, `the table shows the ${anomalies.length} seeded anomalies`);
    await page.waitForFunction(() => document.getElementById('live').textContent === 'Live');
    check(true, 'the live stream is connected');

    await page.waitForSelector('#chart svg path.line');
    const markers = await page.$$eval('#chart circle.anomaly-marker', (c) => c.length);
    check(markers >= 1, `the chart is drawn with ${markers} anomaly marker(s)`);
    const title = await page.textContent('#chart-title');
    check(/ · /.test(title), `the chart shows a series: ${title}`);
    await page.waitForSelector('#health .stat');
    check((await page.textContent('#health')).includes('Last seq'), 'device health is shown');

    // A marker survives reloads only in this window object: proves no reload.
    await page.evaluate(() => { window.__noReload = 'still here'; });
    fixture.child.stdin.write('insert\n');
    const inserted = await fixture.next('INSERTED');
    check(inserted, 'the fixture inserted a new anomaly');
    const newKey = inserted.join('/');
    await page.waitForSelector(rowSelector(newKey), { timeout: 10000 });
    check(await page.evaluate(() => window.__noReload === 'still here'), `new anomaly ${newKey} appeared without a reload`);
    const first = await page.$eval('#anomalies tbody tr', (tr) => tr.dataset.key);
    check(first === newKey, 'it is at the top (newest first)');
    check(await page.$eval(rowSelector(newKey), (tr) => tr.classList.contains('fresh')), 'it is highlighted as new');

    await page.click(rowSelector(newKey));
    await page.waitForFunction((device) => document.getElementById('chart-title').textContent.startsWith(device),
      inserted[0]);
    await page.waitForSelector('#chart circle.anomaly-marker.focus');
    check(true, 'selecting it charts its device with the anomaly marked');
    await page.waitForTimeout(300);

    check(problems.length === 0, 'no script errors, CSP violations or external requests'
      + (problems.length ? ':\n  ' + problems.join('\n  ') : ''));

    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot });
    console.log('screenshot: ' + screenshot);
  } finally {
    if (context) await context.close().catch(() => {});
    fixture.child.stdin.end();
    const exited = new Promise((r) => fixture.child.once('exit', r));
    const timer = setTimeout(() => fixture.child.kill('SIGKILL'), 5000);
    if (fixture.child.exitCode === null) await exited;
    clearTimeout(timer);
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().then(
  () => {
    console.log(`${passed} passed, 0 failed`);
  },
  (err) => {
    console.error(err.stack || String(err));
    console.log(`${passed} passed, 1 failed`);
    process.exit(1);
  },
);
