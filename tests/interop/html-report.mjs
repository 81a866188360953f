// Opens a gcmspec HTML report in headless Chromium and prints, as JSON, what a person sees:
// the verdict, the counts, each matrix row and its outcome, the failed rules' open details
// (quote, reproduction), what the "failed" and "unsupported" filters leave visible, and what
// clicking a passing rule shows. The Rust trial compares it with the JSON report.
//
// usage: node html-report.mjs REPORT.html SCREENSHOT.png
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';

const [report, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  const fetched = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  // Self-contained: nothing but the file itself may load.
  page.on('request', (r) => { if (r.url() !== pathToFileURL(report).href) fetched.push(r.url()); });
  await page.goto(pathToFileURL(report).href);

  const visibleText = async (locator) => ((await locator.count()) && (await locator.first().isVisible()))
    ? (await locator.first().innerText()).trim() : null;

  const seen = {
    title: await page.title(),
    verdict: await visibleText(page.locator('#verdict')),
    tiles: await page.locator('#summary li').allInnerTexts(),
    rows: [],
    failed_details: [],
    errors,
    fetched,
  };
  for (const row of await page.locator('#matrix tbody tr').all()) {
    seen.rows.push({
      rule: await row.getAttribute('data-rule'),
      visible: await row.isVisible(),
      outcome: (await row.locator('td').last().innerText()).trim(),
      checks: await row.locator('span.check').allInnerTexts(),
      failed_checks: await row.locator('span.check.failed').allInnerTexts(),
    });
  }
  for (const d of await page.locator('details.rule.failed').all()) {
    const seenHere = {
      rule: (await d.getAttribute('id')).replace(/^rule-/, ''),
      open: await d.evaluate((e) => e.open),
      quote: await visibleText(d.locator('blockquote.quote p')),
      replay: await visibleText(d.locator('p.replay')),
      message: await visibleText(d.locator('section.check.failed pre.message')),
      // Folded until asked for.
      curl_folded: (await visibleText(d.locator('pre.curl'))) === null,
    };
    // A person unfolds the curl commands and the exchanges of the first failed check.
    const check = d.locator('section.check.failed').first();
    if (await check.locator('details.curl > summary').count()) {
      await check.locator('details.curl > summary').click();
      seenHere.curl = await visibleText(check.locator('pre.curl'));
    }
    if (await check.locator('details.exchanges > summary').count()) {
      await check.locator('details.exchanges > summary').click();
      seenHere.exchanges = 0;
      for (const li of await check.locator('ol.exchanges > li').all()) {
        if (await li.isVisible()) seenHere.exchanges += 1;
      }
    }
    seen.failed_details.push(seenHere);
  }
  await page.screenshot({ path: screenshot, fullPage: false });

  const visibleRows = async () => {
    const out = [];
    for (const row of await page.locator('#matrix tbody tr').all()) {
      if (await row.isVisible()) out.push(await row.getAttribute('data-rule'));
    }
    return out;
  };
  await page.getByRole('button', { name: 'failed' }).click();
  seen.filter_failed = await visibleRows();
  await page.getByRole('button', { name: 'unsupported' }).click();
  seen.filter_unsupported = await visibleRows();
  await page.getByRole('button', { name: 'all rules' }).click();
  seen.filter_all = (await visibleRows()).length;

  // A person clicks a passing rule in the matrix: its details open at its quote.
  const passing = page.locator('#matrix tbody tr.rule.passed a').first();
  if (await passing.count()) {
    const rule = await passing.innerText();
    await passing.click();
    const d = page.locator(`details[id="rule-${rule}"]`);
    seen.clicked = {
      rule,
      open: await d.evaluate((e) => e.open),
      quote: await visibleText(d.locator('blockquote.quote p')),
      in_view: await d.locator('summary').evaluate((e) => {
        const r = e.getBoundingClientRect();
        return r.top >= 0 && r.top < window.innerHeight;
      }),
    };
  }
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
