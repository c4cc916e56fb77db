// sso-browser.mjs: one user's headless Chromium (one cookie jar, several tabs), driven step by
// step by a Go test for the single sign-on scenarios.
//
// Usage: node sso-browser.mjs [--watch ORIGIN]... [--chromium /usr/bin/chromium] [--step-timeout-ms 120000]
//
// Prints "READY chromium" once Chromium runs, then reads one JSON command per line on stdin and
// answers each with one JSON line on stdout {id, ok: true, …} or {id, ok: false, error}:
//   {id, op: "open", tab, url}     open url in the tab (a page of the one context, created on first
//                                  use) and wait until the page is settled (below)
//   {id, op: "reload", tab}        reload the tab's page and wait until it is settled
//   {id, op: "click", tab, selector, navigates}
//                                  click selector; with navigates, wait until a new document of the
//                                  tab's page origin is settled (after any redirects through the
//                                  broker or the upstream), else until the page is settled again
//   {id, op: "get", tab, url}      navigate to url (following redirects) and answer
//                                  {http_status, url, text}: for JSON endpoints and plain pages
//   {id, op: "submit", tab, selector, wait_for}
//                                  click selector on a plain page (a form's button) and wait until
//                                  a new document shows wait_for (a CSS selector); answers {url, text}
//   {id, op: "keys", tab, keys: [{press} | {type}], wait_origin, wait_for}
//                                  keyboard only, in order: press a key (a Playwright key name such
//                                  as "Tab", "Enter" or "Control+A") or type text into the focused
//                                  element; with wait_origin (an origin) or wait_for (a CSS
//                                  selector), then wait until a new document of that origin, or one
//                                  showing that selector, has loaded; answers inspect's fields
//   {id, op: "inspect", tab}       answers {url, text, focused: the focused element's id, images:
//                                  [{src, complete, width}] (width: natural width, 0 when it did not
//                                  load), csp_violations: ["directive blocked-URI", …], scroll_width: the
//                                  document's width in CSS px (wider than the viewport: it overflows)}
//   {id, op: "clear_cookies"}      forgets every cookie (the next page sees a new visitor)
//   {id, op: "shot", tab, path}    full-page screenshot of the tab
//   {id, op: "viewport", tab, width, height}
//                                  resize the tab's viewport (1280 px wide desktop, 390 px phone)
//   {id, op: "select", tab, selector, value}
//                                  choose the option with value in the <select> selector
//   {id, op: "texts", tab, selector}
//                                  answers {url, texts: the text of every element selector matches,
//                                  in document order} (a whole table column, past inspect's cut)
// A page is settled when its #status reads "ready…" or "failed…" (spa/sso.html); the answer of
// open, reload and click then carries {url, status, state, silent, page_error} read from the page.
// Every answer carries requests: each response from a --watch origin (the broker, the upstream)
// seen while the command ran, as {method, origin, path, status, type} and, for an
// authorization endpoint, {client_id, prompt, response_mode}. Never prints a token, code or
// proof. Stdin closed: Chromium is closed and the script exits 0. A step that cannot be driven
// answers ok: false with the page's URL and text (the test decides); only a broken Chromium
// exits 1.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

import { launchContext } from './chromium.mjs';

const { values: args } = parseArgs({
  options: {
    watch: { type: 'string', multiple: true, default: [] },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    'step-timeout-ms': { type: 'string', default: '120000' },
  },
});

const stepTimeout = Number(args['step-timeout-ms']);
const watched = new Set(args.watch.map((u) => new URL(u).origin));
const answer = (obj) => console.log(JSON.stringify(obj));

let browser;
let context;
try {
  ({ browser, context } = await launchContext(args.chromium, stepTimeout));
} catch (err) {
  console.error(`sso-browser: launch ${args.chromium}: ${err?.message?.split('\n')[0]}`);
  process.exit(1);
}

// Every document records the Content-Security-Policy violations it sees (inspect reports them).
await context.addInitScript(() => {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.effectiveDirective} ${e.blockedURI}`);
  });
});

let requests = [];
context.on('response', (res) => {
  const req = res.request();
  let u;
  try { u = new URL(req.url()); } catch { return; }
  if (!watched.has(u.origin)) return;
  const entry = { method: req.method(), origin: u.origin, path: u.pathname, status: res.status(), type: req.resourceType() };
  if (/\/(authorize|auth|v1\/authorize)$/.test(u.pathname)) {
    for (const k of ['client_id', 'prompt', 'response_mode']) {
      if (u.searchParams.has(k)) entry[k] = u.searchParams.get(k);
    }
  }
  requests.push(entry);
});

const tabs = new Map(); // name -> page
async function tab(name) {
  let page = tabs.get(name);
  if (!page) {
    page = await context.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') console.error(`[${name} ${msg.type()}] ${msg.text().slice(0, 500)}`);
    });
    page.on('pageerror', (err) => console.error(`[${name} exception] ${String(err?.message ?? err).slice(0, 500)}`));
    tabs.set(name, page);
  }
  return page;
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// readPage reads the page's state once (undefined while it is navigating).
async function readPage(page) {
  try {
    return await page.evaluate(() => {
      const text = (id) => document.getElementById(id)?.textContent?.trim() ?? '';
      const parse = (s) => { try { return JSON.parse(s); } catch { return s || undefined; } };
      return {
        mark: window.__ssoMark,
        url: location.href,
        status: text('status'),
        state: parse(text('state')),
        silent: parse(text('silent-result')),
        page_error: text('error') || undefined,
        loaded: document.readyState === 'complete',
        body: (document.body?.innerText ?? '').trim().slice(0, 1000),
      };
    });
  } catch {
    return undefined; // execution context destroyed: a navigation is under way
  }
}

// oauthError reports whether text is a JSON OAuth error body ({error, …}).
function oauthError(text) {
  try { return typeof JSON.parse(text)?.error === 'string'; } catch { return false; }
}

// settle polls (bounded) until the page is a settled document of origin; with mark, a new
// document (not the one the mark was set in); with wantSilent, one showing a silent answer.
async function settle(page, origin, { mark, wantSilent } = {}) {
  const deadline = Date.now() + stepTimeout;
  let last;
  while (Date.now() < deadline) {
    last = await readPage(page);
    if (last && new URL(last.url).origin === origin && (mark === undefined || last.mark !== mark)
      && /^(ready|failed)/.test(last.status) && (!wantSilent || last.silent !== undefined)) {
      for (const k of ['mark', 'loaded', 'body']) delete last[k];
      return last;
    }
    if (last?.loaded && new URL(last.url).origin !== origin && oauthError(last.body)) {
      // An OAuth error document on the way (oidc-provider renders its errors as JSON): no
      // redirect will follow, so there is nothing to wait for.
      throw new Error(`stopped at ${last.url} with ${last.body}`);
    }
    await sleep(50);
  }
  let text = '';
  try { text = (await page.locator('body').innerText({ timeout: 2000 })).trim().slice(0, 1500); } catch { /* gone */ }
  throw new Error(`page not settled within ${stepTimeout} ms at ${page.url()} (last read ${JSON.stringify(last)})\npage text:\n${text}`);
}

// markDocument marks the tab's current document, so that newDocument can tell it from the next.
async function markDocument(page) {
  const mark = `m${Date.now()}${Math.random()}`;
  await page.evaluate((m) => { window.__ssoMark = m; }, mark);
  return mark;
}

// newDocument polls (bounded) until the tab shows a loaded document other than the marked one,
// of origin when given, showing selector when given.
async function newDocument(page, mark, { origin, selector }) {
  const deadline = Date.now() + stepTimeout;
  for (;;) {
    let found = false;
    try {
      found = await page.evaluate(([m, o, sel]) => window.__ssoMark !== m && document.readyState === 'complete'
        && (!o || location.origin === o) && (!sel || document.querySelector(sel) !== null), [mark, origin, selector]);
    } catch { /* navigating */ }
    if (found) return;
    if (Date.now() > deadline) {
      throw new Error(`no new document${origin ? ` of ${origin}` : ''}${selector ? ` showing ${selector}` : ''} within ${stepTimeout} ms (at ${page.url()})`);
    }
    await sleep(50);
  }
}

// inspect reads what a keyboard user and the page policy see on the tab's document.
async function inspect(page) {
  const seen = await page.evaluate(() => ({
    focused: document.activeElement?.id || undefined,
    images: [...document.images].map((img) => ({ src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth })),
    csp_violations: window.__cspViolations ?? [],
    scroll_width: document.documentElement.scrollWidth,
  }));
  return { url: page.url(), text: (await page.locator('body').innerText()).trim().slice(0, 4000), ...seen };
}

async function run(cmd) {
  const page = await tab(cmd.tab ?? 'main');
  switch (cmd.op) {
    case 'open':
      await page.goto(cmd.url, { waitUntil: 'load' });
      return settle(page, new URL(cmd.url).origin);
    case 'reload':
      await page.reload({ waitUntil: 'load' });
      return settle(page, new URL(page.url()).origin);
    case 'click': {
      const origin = new URL(page.url()).origin;
      if (!cmd.navigates) {
        await page.evaluate(() => { const el = document.getElementById('silent-result'); if (el) el.textContent = ''; });
        await page.locator(cmd.selector).click();
        return settle(page, origin, { wantSilent: cmd.selector === '#silent' });
      }
      const mark = `m${Date.now()}${Math.random()}`;
      await page.evaluate((m) => { window.__ssoMark = m; }, mark);
      await page.locator(cmd.selector).click();
      return settle(page, origin, { mark });
    }
    case 'get': {
      const res = await page.goto(cmd.url, { waitUntil: 'load' });
      const text = (await page.locator('body').innerText()).trim().slice(0, 4000);
      return { http_status: res?.status(), url: page.url(), text };
    }
    case 'submit': {
      const mark = await markDocument(page);
      await page.locator(cmd.selector).click();
      await newDocument(page, mark, { selector: cmd.wait_for });
      return { url: page.url(), text: (await page.locator('body').innerText()).trim().slice(0, 4000) };
    }
    case 'keys': {
      const mark = await markDocument(page);
      for (const k of cmd.keys ?? []) {
        if (k.press) await page.keyboard.press(k.press);
        else if (k.type) await page.keyboard.type(k.type);
      }
      if (cmd.wait_origin || cmd.wait_for) await newDocument(page, mark, { origin: cmd.wait_origin, selector: cmd.wait_for });
      return inspect(page);
    }
    case 'inspect':
      return inspect(page);
    case 'clear_cookies':
      await context.clearCookies();
      return {};
    case 'shot':
      await page.screenshot({ path: cmd.path, fullPage: true });
      return {};
    case 'viewport':
      await page.setViewportSize({ width: cmd.width, height: cmd.height });
      return {};
    case 'select':
      await page.locator(cmd.selector).selectOption(cmd.value);
      return inspect(page);
    case 'texts':
      return { url: page.url(), texts: (await page.locator(cmd.selector).allInnerTexts()).map((t) => t.trim()) };
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

console.log('READY chromium');

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    answer({ ok: false, error: `not a JSON command: ${line.slice(0, 200)}` });
    continue;
  }
  requests = [];
  try {
    const out = await run(cmd);
    answer({ id: cmd.id, ok: true, ...out, requests });
  } catch (err) {
    let where = '';
    try { where = ` (tab ${cmd.tab} at ${tabs.get(cmd.tab ?? 'main')?.url()})`; } catch { /* gone */ }
    answer({ id: cmd.id, ok: false, error: `${cmd.op}: ${err?.message ?? String(err)}${where}`, requests });
  }
}
await browser.close();
process.exit(0);
