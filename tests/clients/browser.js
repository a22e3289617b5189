// Drives Debian's Chromium headless through playwright-core.
//   node browser.js seed URL_OF_PAGE N    -> the seed's HTML page: wait for N server cards
//   node browser.js builtin URL_OF_PAGE N -> monserv's console at /: N fleet rows, then the
//                                            first host's page (its process table)
//   node browser.js active URL_OF_PAGE N  -> monserv's console: N active alerts listed
//   node browser.js probe URL_OF_PAGE     -> a page that sets window.__result: print it
//   node browser.js status URL            -> the HTTP status of loading URL
// `rebind.test` resolves to 127.0.0.1 (a DNS-rebinding stand-in); SPKI=<base64 sha256>
// trusts that one server key (a test CA for Chromium without an NSS database).
// Prints one JSON line when the cards are there, then one when an alert shows up
// (`active`: one line with the active alerts' subjects).
const { chromium } = require("playwright-core");

const [mode, url, count] = process.argv.slice(2);
const expected = Number(count);

(async () => {
  const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP rebind.test 127.0.0.1"];
  if (process.env.SPKI) args.push("--ignore-certificate-errors-spki-list=" + process.env.SPKI);
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args });
  const errors = [];
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    if (mode === "status") {
      const response = await page.goto(url);
      console.log(JSON.stringify({ event: "status", status: response.status(), body: await response.text() }));
      return;
    }
    await page.goto(url);
    if (mode === "probe") {
      await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 20000 });
      console.log(JSON.stringify({ event: "probe", result: await page.evaluate(() => window.__result), errors }));
      return;
    }
    if (mode === "active") {
      const sel = "#active tbody tr.alert strong";
      await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length === n, [sel, expected], { timeout: 20000 });
      const subjects = await page.$$eval(sel, (els) => els.map((e) => e.textContent));
      console.log(JSON.stringify({ event: "active", subjects, errors }));
      return;
    }
    const cardSel = mode === "seed" ? "#metrics .server h3" : "#fleet-rows .frow .c-name a";
    const alertSel = mode === "seed" ? "#alerts strong" : "#live-alerts li.alert strong";
    await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length === n, [cardSel, expected], { timeout: 20000 });
    const names = await page.$$eval(cardSel, (els) => els.map((e) => e.textContent));
    const status = await page.textContent("#status");
    let extra;
    if (mode === "seed") {
      extra = await page.$$eval("#metrics .server p", (els) => els.map((e) => e.textContent));
    } else {
      await page.click(cardSel);
      await page.waitForSelector("#host-procs tbody tr", { timeout: 20000 });
      extra = await page.$$eval("#host-procs tbody tr", (els) => els.length);
    }
    console.log(JSON.stringify({ event: "metrics", names, status, extra, errors }));
    await page.waitForSelector(alertSel, { timeout: 20000, state: "attached" });
    console.log(JSON.stringify({ event: "alert", subject: await page.textContent(alertSel), errors }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
