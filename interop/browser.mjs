// browser.mjs: drive the demo's login in a real headless Chromium (playwright-core, no bundled browser).
//
// Usage: node browser.mjs --url http://127.0.0.1:8082/ --screenshot /tmp/demo.png
//          [--chromium /usr/bin/chromium] [--timeout-ms 30000]
//          [--login #login] [--signin #signin] [--user #user] [--event #event] [--logout #logout]
//
// Opens the sample app, clicks the login control, clicks "Sign in" on the upstream IdP's page,
// waits for the sample app to show the logged-in user and writes a screenshot; then clicks the
// logout control (the broker's /oidc/logout), confirms on the broker's sign-out page and waits
// to be back on the sample app's home page. Prints one JSON line {user, eventText, url, title, loggedOutURL}. Exits 1 with a clear
// message on failure.
import { parseArgs } from 'node:util';

import { describeFailure, launch } from './chromium.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    screenshot: { type: 'string', default: '' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '30000' },
    login: { type: 'string', default: '#login' },
    signin: { type: 'string', default: '#signin' },
    user: { type: 'string', default: '#user' },
    event: { type: 'string', default: '#event' },
    logout: { type: 'string', default: '#logout' },
  },
});

function fail(message) {
  console.error(`browser: ${message}`);
  process.exit(1);
}

if (!args.url) fail('--url is required (the "Open http://... in your browser" URL printed by `broker demo`)');
const appOrigin = new URL(args.url).origin;
const budget = Number(args['timeout-ms']);
const deadline = Date.now() + budget;
const left = () => Math.max(1000, deadline - Date.now());

// Hard stop: whatever hangs, the process ends within the budget (plus a little for cleanup).
const killer = setTimeout(() => fail(`timed out after ${budget} ms (step: ${step})`), budget + 5000);
killer.unref();

let step = 'launch chromium';
let browser;
let page;
try {
  ({ browser, page } = await launch(args.chromium, left()));

  step = `open ${args.url}`;
  await page.goto(args.url, { timeout: left(), waitUntil: 'load' });

  step = `click ${args.login} on the sample app`;
  await page.locator(args.login).first().click({ timeout: left() });

  step = `click ${args.signin} on the upstream IdP page`;
  await page.locator(args.signin).first().click({ timeout: left() });

  step = `wait for the sample app (${appOrigin}) to show ${args.user}`;
  await page.waitForURL((u) => u.origin === appOrigin, { timeout: left(), waitUntil: 'load' });
  const userLocator = page.locator(args.user).first();
  await userLocator.waitFor({ state: 'visible', timeout: left() });
  const user = (await userLocator.innerText({ timeout: left() })).trim();

  step = `read ${args.event}`;
  let eventText = '';
  const eventLocator = page.locator(args.event).first();
  if (await eventLocator.count() > 0) {
    eventText = (await eventLocator.innerText({ timeout: left() })).trim();
  } else {
    eventText = (await page.locator('body').innerText({ timeout: left() })).trim();
  }

  if (args.screenshot) {
    step = `screenshot to ${args.screenshot}`;
    await page.screenshot({ path: args.screenshot, fullPage: true, timeout: left() });
  }
  const url = page.url();
  const title = await page.title();

  step = `click ${args.logout} (RP-initiated logout at the broker)`;
  await page.locator(args.logout).first().click({ timeout: left() });
  // The sample app sends no id_token_hint, so the broker asks the user to confirm (§2).
  step = 'confirm on the broker\'s sign-out page (#confirm-logout)';
  await page.locator('#confirm-logout').click({ timeout: left() });
  step = `return to ${appOrigin}/`;
  await page.waitForURL((u) => u.origin === appOrigin && u.pathname === '/' && u.search === '', { timeout: left(), waitUntil: 'load' });
  console.log(JSON.stringify({ user, eventText, url, title, loggedOutURL: page.url() }));
  await browser.close();
  process.exit(0);
} catch (err) {
  const where = await describeFailure(browser, page, args.screenshot);
  fail(`failed to ${step}: ${err?.message?.split('\n')[0]}${where}`);
}
