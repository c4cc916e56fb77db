// browser.mjs: drive the demo's two apps in a real headless Chromium (playwright-core, no bundled
// browser): login, single sign-on, silent authentication and back-channel logout.
//
// Usage: node browser.mjs --url http://127.0.0.1:8082/ --screenshot /tmp/demo.png
//          [--chromium /usr/bin/chromium] [--timeout-ms 30000]
//          [--login #login] [--signin #signin] [--user #user] [--event #event] [--logout #logout]
//
// In one browser:
//  1. opens the sample app, clicks the login control, clicks "Sign in" on the upstream IdP's
//     page, waits for the sample app to show the logged-in user: screenshot --screenshot;
//  2. follows #other to the second app and clicks its login control: the broker answers from
//     its session (single sign-on), so no IdP page; waits for the user: screenshot NAME-sso.png
//     (NAME: --screenshot without .png); records the origin of every navigation request of the
//     tab meanwhile, redirects included;
//  3. clicks #silent on the second app (prompt=none) and reads #how;
//  4. follows #other back, clicks the logout control (the broker's /oidc/logout), confirms on
//     the broker's sign-out page and waits to be back on the sample app's home page;
//  5. opens the second app again, reloading (bounded) until it shows #signed-out (the broker's
//     back-channel logout reached it): screenshot NAME-backchannel.png;
//  6. clicks #silent there and reads #silent-result (login_required).
// Prints one JSON line {user, eventText, how, sid, url, title, second: {user, how, sid, origins},
// silentHow, loggedOutURL, signedOut, silentResult, screenshots}. Exits 1 with a clear message on
// failure.
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
const shotPath = (suffix) => (args.screenshot ? args.screenshot.replace(/(\.png)?$/, `${suffix}.png`) : '');

// Hard stop: whatever hangs, the process ends within the budget (plus a little for cleanup).
const killer = setTimeout(() => fail(`timed out after ${budget} ms (step: ${step})`), budget + 5000);
killer.unref();

let step = 'launch chromium';
let browser;
let page;
const screenshots = [];

async function text(selector) {
  return (await page.locator(selector).first().innerText({ timeout: left() })).trim();
}

async function shot(path) {
  if (!path) return;
  step = `screenshot to ${path}`;
  await page.screenshot({ path, fullPage: true, timeout: left() });
  screenshots.push(path);
}

// signedIn waits for an app page on appOrigin below path that shows the user.
async function signedIn(path) {
  await page.waitForURL((u) => u.origin === appOrigin && u.pathname.startsWith(path), { timeout: left(), waitUntil: 'load' });
  await page.locator(args.user).first().waitFor({ state: 'visible', timeout: left() });
  return { user: await text(args.user), how: await text('#how'), sid: await text('#sid') };
}

try {
  ({ browser, page } = await launch(args.chromium, left()));

  step = `open ${args.url}`;
  await page.goto(args.url, { timeout: left(), waitUntil: 'load' });

  step = `click ${args.login} on the sample app`;
  await page.locator(args.login).first().click({ timeout: left() });

  step = `click ${args.signin} on the upstream IdP page`;
  await page.locator(args.signin).first().click({ timeout: left() });

  step = `wait for the sample app (${appOrigin}) to show ${args.user}`;
  const first = await signedIn('/');

  step = `read ${args.event}`;
  let eventText = '';
  const eventLocator = page.locator(args.event).first();
  if (await eventLocator.count() > 0) {
    eventText = (await eventLocator.innerText({ timeout: left() })).trim();
  } else {
    eventText = (await page.locator('body').innerText({ timeout: left() })).trim();
  }
  await shot(args.screenshot);
  const url = page.url();
  const title = await page.title();

  step = 'follow #other to the second app';
  await page.locator('#other').first().click({ timeout: left() });
  await page.waitForURL((u) => u.origin === appOrigin && u.pathname.startsWith('/second/'), { timeout: left(), waitUntil: 'load' });
  step = `click ${args.login} on the second app (single sign-on)`;
  const origins = [];
  const onNavigation = (req) => { // every hop, redirects included
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) origins.push(new URL(req.url()).origin);
  };
  page.on('request', onNavigation);
  await page.locator(args.login).first().click({ timeout: left() });
  step = `wait for the second app to show ${args.user}`;
  const second = await signedIn('/second/');
  page.off('request', onNavigation);
  await shot(shotPath('-sso'));

  step = 'click #silent on the second app (prompt=none)';
  await page.locator('#silent').first().click({ timeout: left() });
  await page.locator('#how', { hasText: 'silent authentication' }).waitFor({ state: 'visible', timeout: left() });
  const silentHow = await text('#how');

  step = 'follow #other back to the sample app';
  await page.locator('#other').first().click({ timeout: left() });
  await page.waitForURL((u) => u.origin === appOrigin && u.pathname === '/', { timeout: left(), waitUntil: 'load' });
  step = `click ${args.logout} (RP-initiated logout at the broker)`;
  await page.locator(args.logout).first().click({ timeout: left() });
  // The sample app sends no id_token_hint, so the broker asks the user to confirm (§2).
  step = 'confirm on the broker\'s sign-out page (#confirm-logout)';
  await page.locator('#confirm-logout').click({ timeout: left() });
  step = `return to ${appOrigin}/`;
  await page.waitForURL((u) => u.origin === appOrigin && u.pathname === '/' && u.search === '', { timeout: left(), waitUntil: 'load' });
  const loggedOutURL = page.url();

  // The broker tells the second app by back-channel logout, asynchronously: reload until it shows it.
  step = 'open the second app until it shows #signed-out (back-channel logout)';
  const secondURL = `${appOrigin}/second/`;
  for (;;) {
    await page.goto(secondURL, { timeout: left(), waitUntil: 'load' });
    if (await page.locator('#signed-out').count() > 0) break;
    if (await page.locator(args.user).count() === 0) throw new Error('the second app shows neither the user nor #signed-out');
    if (Date.now() > deadline) throw new Error('no back-channel logout within the budget');
    await page.waitForTimeout(250);
  }
  const signedOut = await text('#signed-out');
  await shot(shotPath('-backchannel'));

  step = 'click #silent on the signed-out second app';
  await page.locator('#silent').first().click({ timeout: left() });
  await page.locator('#silent-result').waitFor({ state: 'visible', timeout: left() });
  const silentResult = await text('#silent-result');

  console.log(JSON.stringify({
    user: first.user, eventText, how: first.how, sid: first.sid, url, title,
    second: { ...second, origins }, silentHow, loggedOutURL, signedOut, silentResult, screenshots,
  }));
  await browser.close();
  process.exit(0);
} catch (err) {
  const where = await describeFailure(browser, page, args.screenshot ? shotPath('-failure') : '');
  fail(`failed to ${step}: ${err?.message?.split('\n')[0]}${where}`);
}
