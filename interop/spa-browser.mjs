// spa-browser.mjs: drive the auth0-spa-js interop page (spa/) in a real headless Chromium.
//
// Usage: node spa-browser.mjs --url http://127.0.0.1:PORT/ --broker http://127.0.0.1:BPORT
//          [--screenshot PNG] [--chromium /usr/bin/chromium] [--timeout-ms 30000] [--stop-at-authorize]
//
// Opens the page, clicks #login (auth0-spa-js loginWithRedirect → broker /authorize → upstream, which
// signs in by itself → broker → back to the page), waits until the page's #status reads "done" or
// "failed…" / "API answered…", and prints one JSON line {status, user, token, api, error, url,
// authorize, requests}: authorize = the /authorize query parameters that matter (dpop_jkt,
// audience, PKCE method…), requests = the broker and API calls the page made (method, path, status,
// DPoP header present, Authorization scheme, DPoP-Nonce answered). Never prints a token, code or
// proof. --stop-at-authorize aborts the navigation to the broker's /authorize and reports only it.
// Exits 1 with a clear message when the page cannot be driven; a page-level failure is reported
// in the JSON (error) with exit 0, so the caller can assert on it.
import { parseArgs } from 'node:util';

import { describeFailure, launch } from './chromium.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    broker: { type: 'string' },
    screenshot: { type: 'string', default: '' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '30000' },
    'stop-at-authorize': { type: 'boolean', default: false },
  },
});

function fail(message) {
  console.error(`spa-browser: ${message}`);
  process.exit(1);
}

if (!args.url || !args.broker) fail('--url (the SPA page) and --broker (the broker origin) are required');
const pageOrigin = new URL(args.url).origin;
const brokerOrigin = new URL(args.broker).origin;
const budget = Number(args['timeout-ms']);
const deadline = Date.now() + budget;
const left = () => Math.max(1000, deadline - Date.now());

let step = 'launch chromium';
const killer = setTimeout(() => fail(`timed out after ${budget} ms (step: ${step})`), budget + 5000);
killer.unref();

const AUTHORIZE_PARAMS = ['response_type', 'client_id', 'redirect_uri', 'audience', 'scope', 'code_challenge_method',
  'dpop_jkt', 'response_mode', 'connection'];
let authorize;
const requests = [];

function describe(req) {
  const u = new URL(req.url());
  return { method: req.method(), origin: u.origin, path: u.pathname };
}

let browser;
let page;
try {
  ({ browser, page } = await launch(args.chromium, left()));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') console.error(`[page ${msg.type()}] ${msg.text().slice(0, 500)}`);
  });
  page.on('pageerror', (err) => console.error(`[page exception] ${String(err?.message ?? err).slice(0, 500)}`));

  await page.route(`${brokerOrigin}/authorize**`, async (route) => {
    const u = new URL(route.request().url());
    authorize = Object.fromEntries(AUTHORIZE_PARAMS.filter((k) => u.searchParams.has(k)).map((k) => [k, u.searchParams.get(k)]));
    authorize.has_code_challenge = u.searchParams.has('code_challenge');
    authorize.has_state = u.searchParams.has('state');
    authorize.has_nonce = u.searchParams.has('nonce');
    authorize.has_auth0Client = u.searchParams.has('auth0Client');
    if (args['stop-at-authorize']) await route.abort('aborted');
    else await route.continue();
  });
  // 'response' (headers received), not 'requestfinished': a 401 whose body nobody reads may never finish.
  page.on('response', async (res) => {
    const req = res.request();
    const d = describe(req);
    if (d.origin === pageOrigin && d.path !== '/api' && !d.path.startsWith('/api/')) return; // static files
    if (req.resourceType() === 'document' && d.origin !== brokerOrigin) return;
    const entry = { ...d, status: res.status() };
    requests.push(entry); // in response order; headers filled in below
    try {
      const h = await req.allHeaders();
      const rh = await res.allHeaders();
      Object.assign(entry, {
        dpop: Boolean(h.dpop),
        authorization_scheme: h.authorization ? h.authorization.split(' ')[0] : undefined,
        content_type: h['content-type'],
        dpop_nonce_answered: Boolean(rh['dpop-nonce']),
        www_authenticate: rh['www-authenticate'],
      });
    } catch { /* page gone */ }
  });

  step = `open ${args.url}`;
  await page.goto(args.url, { timeout: left(), waitUntil: 'load' });
  await page.locator('#status').filter({ hasText: /^(ready|failed)/ }).waitFor({ timeout: left() });

  step = 'click #login (loginWithRedirect)';
  if (args['stop-at-authorize']) {
    const aborted = page.waitForEvent('requestfailed', { predicate: (r) => r.url().startsWith(`${brokerOrigin}/authorize`), timeout: left() });
    await page.locator('#login').click({ timeout: left() });
    await aborted;
    console.log(JSON.stringify({ authorize, url: page.url() }));
    await browser.close();
    process.exit(0);
  }
  await page.locator('#login').click({ timeout: left() });

  step = `wait for the page (${pageOrigin}) to finish`;
  await page.waitForURL((u) => u.origin === pageOrigin, { timeout: left(), waitUntil: 'load' });
  await page.locator('#status').filter({ hasText: /^(done|failed|API answered)/ }).waitFor({ timeout: left() });

  const text = async (sel) => (await page.locator(sel).innerText({ timeout: left() })).trim();
  const parse = (s) => { try { return JSON.parse(s); } catch { return s || undefined; } };
  const result = {
    status: await text('#status'),
    user: parse(await text('#user')),
    token: parse(await text('#token')),
    api: parse(await text('#api')),
    silent: parse(await text('#silent')),
    error: await text('#error') || undefined,
    url: page.url(),
    authorize,
    requests,
  };
  if (args.screenshot) {
    step = `screenshot to ${args.screenshot}`;
    await page.screenshot({ path: args.screenshot, fullPage: true, timeout: left() });
  }
  console.log(JSON.stringify(result));
  await browser.close();
  process.exit(0);
} catch (err) {
  const where = await describeFailure(browser, page, args.screenshot);
  fail(`failed to ${step}: ${err?.message?.split('\n')[0]}${where}\nauthorize: ${JSON.stringify(authorize)}\nrequests: ${JSON.stringify(requests)}`);
}
