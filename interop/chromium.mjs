// chromium.mjs: what the browser drivers (browser.mjs, spa-browser.mjs) share: launching
// Debian's Chromium headless through playwright-core, and describing a failure.
import { chromium } from 'playwright-core';

// Flags for a root, sandbox-less CI machine with no network beyond loopback.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

// launch starts Chromium at executablePath and opens one page; timeout (ms) bounds the launch
// and is the page's default timeout.
export async function launch(executablePath, timeout) {
  const { browser, context } = await launchContext(executablePath, timeout);
  const page = await context.newPage();
  return { browser, page };
}

// launchContext starts Chromium at executablePath with one browser context: one cookie jar
// shared by every page opened in it, as tabs of one user's browser. timeout (ms) bounds the
// launch and is the context's default timeout.
export async function launchContext(executablePath, timeout) {
  const browser = await chromium.launch({ executablePath, headless: true, timeout, args: ARGS });
  const context = await browser.newContext();
  context.setDefaultTimeout(timeout);
  return { browser, context };
}

// describeFailure returns " (page URL)\npage text:\n…" for the failure message, takes a
// screenshot when asked, and closes the browser; every step is best effort.
export async function describeFailure(browser, page, screenshot) {
  let where = '';
  try {
    if (page) {
      where = ` (page ${page.url()})`;
      if (screenshot) await page.screenshot({ path: screenshot, fullPage: true, timeout: 3000 });
      const body = (await page.locator('body').innerText({ timeout: 2000 })).trim().slice(0, 1500);
      where += `\npage text:\n${body}`;
    }
  } catch { /* best effort */ }
  try { await browser?.close(); } catch { /* ignore */ }
  return where;
}
