// Drives Debian's Chromium headless through playwright-core.
//   node browser.js seed URL_OF_PAGE N    -> the seed's HTML page: wait for N server cards
//   node browser.js builtin URL_OF_PAGE N -> monserv's own page at /
//   node browser.js active URL_OF_PAGE N  -> monserv's own page: N active alerts listed
// Prints one JSON line when the cards are there, then one when an alert shows up
// (`active`: one line with the active alerts' subjects).
const { chromium } = require("playwright-core");

const [mode, url, count] = process.argv.slice(2);
const expected = Number(count);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  const errors = [];
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    if (mode === "active") {
      const sel = "#active .firing strong";
      await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length === n, [sel, expected], { timeout: 20000 });
      const subjects = await page.$$eval(sel, (els) => els.map((e) => e.textContent));
      console.log(JSON.stringify({ event: "active", subjects, errors }));
      return;
    }
    const cardSel = mode === "seed" ? "#metrics .server h3" : "#hosts .host h2";
    const alertSel = "#alerts strong";
    await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length === n, [cardSel, expected], { timeout: 20000 });
    const names = await page.$$eval(cardSel, (els) => els.map((e) => e.textContent));
    const status = await page.textContent("#status");
    const extra = mode === "seed"
      ? await page.$$eval("#metrics .server p", (els) => els.map((e) => e.textContent))
      : await page.$$eval("#hosts .procs tr", (els) => els.length);
    console.log(JSON.stringify({ event: "metrics", names, status, extra, errors }));
    await page.waitForSelector(alertSel, { timeout: 20000 });
    console.log(JSON.stringify({ event: "alert", subject: await page.textContent(alertSel), errors }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
