// console-logs-browser.mjs: the console's Logs page in a real headless Chromium
// (playwright-core, no bundled browser): the live tail shows a failed login with its
// troubleshooting text, and the event view shows it in full.
//
// Usage: node console-logs-browser.mjs --console http://127.0.0.1:PORT/console --token TOKEN
//          --fail-url URL --shots DIR [--also TYPE,…] [--chromium /usr/bin/chromium] [--timeout-ms 60000]
//
//  1. signs in to the console with the management token (break-glass form), opens Logs and
//     waits until its live tail runs;
//  2. opens --fail-url (an /authorize whose login the broker refuses) in a second tab of the
//     same browser, and waits for the failed login's row to appear at the top of the Logs
//     table, without reloading: logs-tail.png (1280 px wide), logs-phone.png (390 px);
//     pauses and resumes the tail with the keyboard (Space, Enter on the focused button);
//  3. follows the row to its event view, opens "Raw JSON" with Enter: event.png,
//     event-phone.png;
//  4. for each event type of --also (e.g. feacft,fapi), opens Logs filtered by it and the
//     newest such event's view: event-TYPE.png, event-TYPE-phone.png.
// Prints one JSON line {tailMs, rowText, pausedText, firstStatus, onText, offText (the tail's
// status on load, its button's text when on and off), troubleText, rawJSON, factsText,
// alsoTrouble: {TYPE: text}, screenshots}: tailMs
// is the time from the failing tab's answer to the row's appearance. Exits 1 with a clear
// message on failure.
import { parseArgs } from 'node:util';
import path from 'node:path';

import { describeFailure, launchContext } from './chromium.mjs';

const { values: args } = parseArgs({
  options: {
    console: { type: 'string' },
    token: { type: 'string' },
    'fail-url': { type: 'string' },
    shots: { type: 'string' },
    also: { type: 'string', default: '' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '60000' },
  },
});

function fail(message) {
  console.error(`console-logs-browser: ${message}`);
  process.exit(1);
}

for (const k of ['console', 'token', 'fail-url', 'shots']) {
  if (!args[k]) fail(`--${k} is required`);
}
const budget = Number(args['timeout-ms']);
let step = 'launch chromium';
const killer = setTimeout(() => fail(`timed out after ${budget} ms (step: ${step})`), budget + 5000);
killer.unref();

const shot = (name) => path.join(args.shots, name);
let browser;
let page;
try {
  const launched = await launchContext(args.chromium, budget);
  browser = launched.browser;
  const context = launched.context;
  page = await context.newPage();
  await page.setViewportSize({ width: 1280, height: 900 });
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));

  step = 'sign in with the management token';
  await page.goto(`${args.console}/signin`);
  await page.locator('#token').fill(args.token);
  await Promise.all([page.waitForURL(`${args.console}/`), page.locator('#signin-token').click()]);

  step = 'open Logs and wait for the live tail';
  await page.getByRole('navigation', { name: 'Console sections' }).getByRole('link', { name: 'Logs', exact: true }).click();
  await page.waitForURL(/\/console\/logs$/);
  const tail = page.locator('#logs-tail');
  await tail.waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelector('#logs-tail')?.getAttribute('aria-pressed') === 'true');
  await page.locator('#logs-tail-status').filter({ hasText: 'Live' }).waitFor();
  const firstStatus = (await page.locator('#logs-tail-status').innerText()).trim();
  const onText = (await tail.innerText()).trim();

  step = 'fail a login in another tab';
  const other = await context.newPage();
  try {
    await other.goto(args['fail-url']);
  } catch (e) {
    // The broker sends the refusal to the app's redirect_uri, which nothing serves.
    if (!/ERR_UNSAFE_PORT|ERR_CONNECTION_REFUSED/.test(e.message)) throw e;
  }
  const failedAt = Date.now();
  await other.close();

  step = 'wait for the failed login in the live tail';
  const row = page.locator('#logs-rows tr.logs-new', { hasText: 'dpop_not_supported' }).first();
  await row.waitFor();
  const tailMs = Date.now() - failedAt;
  const rowText = (await row.innerText()).trim();
  await page.waitForTimeout(2100); // the row's highlight fades before the screenshot
  await page.screenshot({ path: shot('logs-tail.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: shot('logs-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  step = 'pause and resume the live tail from the keyboard';
  await tail.focus();
  await page.keyboard.press('Space');
  await page.waitForFunction(() => document.querySelector('#logs-tail')?.getAttribute('aria-pressed') === 'false');
  const pausedText = (await page.locator('#logs-tail-status').innerText()).trim();
  const offText = (await tail.innerText()).trim();
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#logs-tail')?.getAttribute('aria-pressed') === 'true');

  step = 'open the event view';
  await Promise.all([page.waitForURL(/\/console\/logs\/\d+$/), row.locator('td').first().getByRole('link').click()]);
  const troubleText = (await page.locator('.logs-trouble').innerText()).trim();
  const factsText = (await page.locator('.logs-columns').innerText()).trim();
  step = 'open the raw JSON';
  await page.locator('.logs-raw summary').focus();
  await page.keyboard.press('Enter'); // a <details> opens from the keyboard
  const raw = page.locator('.logs-raw pre');
  await raw.waitFor({ state: 'visible' });
  const rawJSON = (await raw.innerText()).trim();
  await page.screenshot({ path: shot('event.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: shot('event-phone.png'), fullPage: true });

  const alsoTrouble = {};
  const alsoShots = [];
  await page.setViewportSize({ width: 1280, height: 900 });
  for (const type of args.also.split(',').filter(Boolean)) {
    step = `open the newest ${type} event's view`;
    await page.goto(`${args.console}/logs?type=${encodeURIComponent(type)}`);
    const first = page.locator('#logs-rows tr').first();
    await first.waitFor();
    await Promise.all([page.waitForURL(/\/console\/logs\/\d+$/), first.locator('td').first().getByRole('link').click()]);
    alsoTrouble[type] = (await page.locator('.logs-trouble').innerText()).trim();
    await page.screenshot({ path: shot(`event-${type}.png`), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: shot(`event-${type}-phone.png`), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    alsoShots.push(`event-${type}.png`, `event-${type}-phone.png`);
  }

  if (problems.length) fail(`the page reported errors (CSP or script): ${problems.join(' | ')}`);
  console.log(JSON.stringify({
    tailMs, rowText, pausedText, firstStatus, onText, offText, troubleText, factsText, rawJSON, alsoTrouble,
    screenshots: ['logs-tail.png', 'logs-phone.png', 'event.png', 'event-phone.png', ...alsoShots].map(shot),
  }));
  await browser.close();
  process.exit(0);
} catch (e) {
  const where = await describeFailure(browser, page, shot('failure.png'));
  fail(`${step}: ${e.message}${where}`);
}
