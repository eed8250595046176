// Drives the embedq dashboard in headless Chromium: waits for a job's progress bar to reach
// 100%, clicks "Requeue" on a dead letter and waits for it to leave the list, and saves a
// screenshot. Usage: node dashboard.mjs BASE_URL TOKEN JOB_ID DEAD_LETTER_ID SCREENSHOT.png
import { chromium } from 'playwright-core';

const [base, token, job, dead, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
  const bar = page.locator(`tr[data-job="${job}"] .bar`);
  await bar.waitFor({ timeout: 30000 });
  const seen = new Set();
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const pct = Number(await bar.getAttribute('data-percent'));
    seen.add(pct);
    if (pct === 100) break;
    await page.waitForTimeout(200);
  }
  const final = Number(await bar.getAttribute('data-percent'));
  if (final !== 100) throw new Error(`progress bar stopped at ${final}%`);
  const row = dead ? page.locator(`tr[data-dead="${dead}"]`) : page.locator('tr[data-dead]').first();
  await row.waitFor({ timeout: 10000 });
  const clicked = await row.getAttribute('data-dead');
  await row.locator('button.requeue').click();
  await row.waitFor({ state: 'detached', timeout: 15000 });
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ ok: true, requeued: clicked, percents_seen: [...seen].sort((a, b) => a - b) }));
} finally {
  await browser.close();
}
