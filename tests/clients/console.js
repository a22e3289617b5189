// Drives monserv's operator console in Debian's Chromium (headless, playwright-core).
// Each mode prints JSON lines; the Rust tests (tests/it/console.rs) assert on them.
//   tour URL OUTDIR        screenshots of every view at phone/laptop/wall widths in both
//                          themes, axe-core on each, a chart that must change live
//   hostile URL N          N targets' names as the page shows them, and whether markup ran
//   fleet URL N UPDATES    N targets: time to first render, cost per update, scrolling
//   upload URL TOKEN WASM NAME SETTINGS_FILE
//                          the token dialog, a rule uploaded through the form, its backtest
//   silence URL NAME VALUE a silence created through the form
//   manage URL NAME        rule NAME deleted and every silence expired through the page
//   reconnect URL          "live", then (after the daemon is stopped) reconnecting + stale
// Every mode reports the page's console errors and uncaught exceptions in `errors`.
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const [mode, url, ...rest] = process.argv.slice(2);
const out = (o) => console.log(JSON.stringify(o));
const WIDTHS = [["phone", 390, 844], ["laptop", 1366, 768], ["wall", 2560, 1440]];

async function open(browser, errors, viewport) {
  const page = await browser.newPage({ viewport: viewport || { width: 1366, height: 768 } });
  page.on("pageerror", (e) => errors.push("pageerror: " + String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  return page;
}

// axe-core, evaluated through the DevTools protocol (the page's CSP allows no
// injected script tags, rightly).
async function axe(page) {
  const source = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  await page.evaluate(source);
  const r = await page.evaluate(async () => {
    const res = await window.axe.run(document, { resultTypes: ["violations"] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  return r;
}

const rows = (page) => page.$$eval("#fleet-rows .frow", (els) => els.length);
async function waitRows(page, n, timeout) {
  await page.waitForFunction((n) => document.querySelectorAll("#fleet-rows .frow").length >= n, n, { timeout: timeout || 30000 });
}

async function tour(browser, errors) {
  const dir = rest[0];
  fs.mkdirSync(dir, { recursive: true });
  const shots = [], violations = [];
  let chart = null, summary = null, badges = null;
  for (const theme of ["dark", "light"]) {
    for (const [wname, width, height] of WIDTHS) {
      const page = await open(browser, errors, { width, height });
      await page.emulateMedia({ colorScheme: theme });
      await page.goto(url);
      await waitRows(page, 1);
      // An online host (the offline one has no trends).
      await page.waitForFunction(() => [...document.querySelectorAll("#fleet-rows .frow")].some((r) => r.querySelector(".badge").textContent !== "offline" && r.querySelector(".c-num").textContent !== "–"));
      const key = await page.$$eval("#fleet-rows .frow", (rows) => rows.find((r) => r.querySelector(".badge").textContent !== "offline").querySelector(".c-name a").getAttribute("href"));
      if (!summary) {
        // The fleet's counts once the active alerts are in (problems sort first).
        await page.waitForFunction(() => !/ 0 with active alerts/.test(document.getElementById("fleet-summary").textContent));
        summary = await page.textContent("#fleet-summary");
        badges = await page.$$eval("#fleet-rows .frow .badge", (els) => els.map((e) => e.textContent));
      }
      for (const view of ["#fleet", key, "#alerts", "#rules"]) {
        await page.evaluate((h) => { location.hash = h; }, view);
        if (view === key) {
          await page.waitForFunction(() => document.querySelectorAll("#charts canvas").length >= 3 &&
            /minutes|live/.test(document.getElementById("trend-note").textContent), null, { timeout: 20000 });
        } else if (view === "#rules") {
          await page.waitForSelector("#rules tbody tr", { timeout: 20000 });
        } else {
          await page.waitForTimeout(300);
        }
        const name = theme + "-" + wname + "-" + (view === key ? "host" : view.slice(1)) + ".png";
        await page.screenshot({ path: path.join(dir, name) });
        shots.push(name);
        if (wname !== "wall") {
          for (const v of await axe(page)) violations.push(Object.assign({ view: view === key ? "host" : view, theme, width }, v));
        }
      }
      if (!chart && theme === "dark" && wname === "laptop") {
        // The CPU chart on the host page must change with the next rounds.
        await page.evaluate((h) => { location.hash = h; }, key);
        const sel = '#charts [data-series="cpu.used_percent"] canvas';
        await page.waitForSelector(sel);
        const before = await page.$eval(sel, (c) => ({ points: Number(c.dataset.points), pixels: c.toDataURL() }));
        await page.waitForFunction(([sel, n]) => Number(document.querySelector(sel).dataset.points) >= n + 2, [sel, before.points], { timeout: 30000 });
        const after = await page.$eval(sel, (c) => ({ points: Number(c.dataset.points), pixels: c.toDataURL(), label: c.getAttribute("aria-label") }));
        chart = { before: before.points, after: after.points, changed: before.pixels !== after.pixels, label: after.label };
      }
      await page.close();
    }
  }
  out({ event: "tour", shots, violations, chart, summary, badges, errors });
}

async function hostile(browser, errors) {
  const n = Number(rest[0]);
  const page = await open(browser, errors);
  await page.goto(url);
  await waitRows(page, n);
  await page.waitForFunction(() => window.__console.updates >= 2);
  const names = await page.$$eval("#fleet-rows .frow .c-name a", (els) => els.map((a) => a.textContent));
  const problems = await page.$$eval("#fleet-rows .frow .c-err", (els) => els.map((a) => a.textContent));
  // The longest name's host page: the title is the whole name, as text.
  const longest = await page.$$eval("#fleet-rows .frow .c-name a", (els) => els.reduce((a, b) => (b.textContent.length > a.textContent.length ? b : a)).getAttribute("href"));
  await page.evaluate((h) => { location.hash = h; }, longest);
  await page.waitForFunction(() => document.querySelectorAll("#host-procs tbody tr").length > 0);
  const title = await page.textContent("#host-title");
  await page.evaluate((h) => { location.hash = "#fleet"; }, null);
  await waitRows(page, n);
  const markupHref = await page.$$eval("#fleet-rows .frow .c-name a", (els) => els.find((a) => a.textContent.includes("<img")).getAttribute("href"));
  await page.evaluate((h) => { location.hash = h; }, markupHref);
  await page.waitForFunction(() => document.getElementById("host-title").textContent.includes("<img") && document.querySelectorAll("#host-procs tbody tr").length > 0);
  const procs = await page.$$eval("#host-procs tbody td", (els) => els.map((e) => e.textContent));
  const injected = await page.evaluate(() => ({ imgs: document.querySelectorAll("main img, main script, main iframe").length, pwned: window.__pwned === undefined ? null : window.__pwned }));
  out({ event: "hostile", names, problems, title, procs, injected, errors });
}

async function fleet(browser, errors) {
  const n = Number(rest[0]), updates = Number(rest[1] || 5);
  const page = await open(browser, errors, { width: 1920, height: 1080 });
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction((n) => window.__console.targets === n, n, { timeout: 60000 });
  const first = await page.evaluate(() => Object.assign({}, window.__console));
  const loadToRows = Date.now() - t0;
  await page.waitForFunction((k) => window.__console.updates >= k, first.updates + updates, { timeout: 120000 });
  const perf = await page.evaluate(() => Object.assign({}, window.__console));
  const domRows = await rows(page);
  // Scroll to the end: the last target is there, and still only a window of rows.
  await page.$eval("#fleet-scroll", (s) => { s.scrollTop = s.scrollHeight; });
  await page.waitForTimeout(300);
  const lastIndex = await page.$$eval("#fleet-rows .frow", (els) => Math.max(...els.map((e) => Number(e.getAttribute("aria-rowindex")))));
  const domRowsAtEnd = await rows(page);
  await page.fill("#filter", "agent-0777.");
  await page.waitForTimeout(200);
  const filtered = await page.$$eval("#fleet-rows .frow .c-name a", (els) => els.map((a) => a.textContent));
  const summary = await page.textContent("#fleet-summary");
  out({ event: "fleet", firstRenderMs: first.firstRender, loadToRowsMs: loadToRows, firstUpdateMs: first.lastUpdateMs, perf, domRows, domRowsAtEnd, lastIndex, filtered, summary, errors });
}

async function upload(browser, errors) {
  const [token, wasm, name, settingsFile] = rest;
  const page = await open(browser, errors);
  await page.goto(url);
  // No token yet: the page asks for it once.
  await page.waitForSelector("#token-dialog[open]", { timeout: 20000 });
  await page.fill("#token-input", token);
  await page.click("#token-dialog button[type=submit]");
  await page.waitForFunction(() => document.getElementById("status").textContent === "Live", null, { timeout: 20000 });
  // Until the token was given the socket and the first REST call were refused
  // (401), which the browser logs; from here on nothing may fail.
  await page.waitForTimeout(500);
  errors.length = 0;
  await page.evaluate(() => { location.hash = "#rules"; });
  await page.waitForSelector("#rules tbody tr");
  await page.fill("#rule-name", name);
  await page.setInputFiles("#rule-file", wasm);
  if (settingsFile) await page.fill("#rule-settings", fs.readFileSync(settingsFile, "utf8"));
  await page.click("#rule-form button[type=submit]");
  await page.waitForFunction(() => /is live|not changed/.test(document.getElementById("rule-result").textContent), null, { timeout: 30000 });
  const result = await page.textContent("#rule-result");
  await page.waitForSelector(`#rules tbody tr[data-rule="${name}"]`, { timeout: 20000 });
  const row = await page.$eval(`#rules tbody tr[data-rule="${name}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
  await page.click(`#rules tbody tr[data-rule="${name}"] button:text("Backtest")`);
  await page.waitForFunction(() => /rounds|failed/.test(document.getElementById("backtest-summary").textContent), null, { timeout: 60000 });
  const backtest = await page.textContent("#backtest-summary");
  // A reload keeps the token for this tab: no second question.
  await page.reload();
  await page.waitForFunction(() => document.getElementById("status").textContent === "Live", null, { timeout: 20000 });
  await page.waitForSelector(`#rules tbody tr[data-rule="${name}"]`, { timeout: 20000 });
  const askedAgain = await page.$eval("#token-dialog", (d) => d.open);
  const stored = await page.evaluate(() => ({ session: sessionStorage.getItem("monserv.token") !== null, local: Object.keys(localStorage) }));
  out({ event: "upload", result, row, backtest, askedAgain, stored, errors });
}

async function silence(browser, errors) {
  const [name, value] = rest;
  const page = await open(browser, errors);
  await page.goto(url);
  await page.evaluate(() => { location.hash = "#alerts"; });
  await page.waitForSelector("#silence-form");
  await page.selectOption("#matchers .matcher select", name);
  await page.fill("#matchers .matcher input", value);
  await page.fill("#silence-duration", "1h");
  await page.fill("#silence-comment", "maintenance <b>window</b>");
  await page.click("#silence-form button[type=submit]");
  await page.waitForFunction(() => /created|Not created/.test(document.getElementById("silence-result").textContent), null, { timeout: 20000 });
  const result = await page.textContent("#silence-result");
  await page.waitForSelector("#silences tbody tr[data-id]");
  const listed = await page.$$eval("#silences tbody tr[data-id]", (els) => els.map((tr) => [...tr.cells].map((c) => c.textContent)));
  out({ event: "silence", result, listed, errors });
}

// Deletes rule NAME (two clicks: the button asks again) and expires every silence.
async function manage(browser, errors) {
  const [name] = rest;
  const page = await open(browser, errors);
  await page.goto(url);
  await page.evaluate(() => { location.hash = "#rules"; });
  const del = `#rules tbody tr[data-rule="${name}"] button.danger`;
  await page.waitForSelector(del);
  await page.click(del);
  const asked = await page.textContent(del);
  await page.click(del);
  await page.waitForFunction(() => /deleted/.test(document.getElementById("rule-result").textContent), null, { timeout: 20000 });
  await page.waitForFunction((n) => !document.querySelector(`#rules tbody tr[data-rule="${n}"]`), name, { timeout: 20000 });
  const rules = await page.$$eval("#rules tbody tr", (els) => els.map((tr) => tr.dataset.rule));
  await page.evaluate(() => { location.hash = "#alerts"; });
  await page.waitForSelector("#silences tbody tr[data-id]");
  let expired = 0;
  const buttons = () => page.$$eval("#silences tbody tr[data-id] button.danger", (b) => b.length);
  // Counted before each click: the table is reloaded once the DELETE is answered,
  // and only then may the next button be clicked.
  for (let n = await buttons(); n > 0 && expired <= 20; n = await buttons()) {
    await page.click("#silences tbody tr[data-id] button.danger");
    expired++;
    await page.waitForFunction((n) => document.querySelectorAll("#silences tbody tr[data-id] button.danger").length < n || /Not expired/.test(document.getElementById("silence-result").textContent),
      n, { timeout: 20000 });
    if (/Not expired/.test(await page.textContent("#silence-result"))) break;
  }
  const states = await page.$$eval("#silences tbody tr[data-id]", (els) => els.map((tr) => tr.cells[0].textContent));
  out({ event: "manage", asked, rules, expired, states, errors });
}

async function reconnect(browser, errors) {
  const page = await open(browser, errors);
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").textContent === "Live" && window.__console.updates > 0, null, { timeout: 20000 });
  out({ event: "live" });
  await page.waitForFunction(() => /Reconnecting/.test(document.getElementById("status").textContent), null, { timeout: 20000 });
  const status = await page.textContent("#status");
  await page.waitForFunction(() => !document.getElementById("stale").hidden, null, { timeout: 30000 });
  const stale = await page.textContent("#stale");
  // Connection errors of the reconnect attempts are expected here; page errors are not.
  out({ event: "down", status, stale, errors: errors.filter((e) => e.startsWith("pageerror")) });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  const errors = [];
  try {
    const run = { tour, hostile, fleet, upload, silence, manage, reconnect }[mode];
    if (!run) throw new Error("unknown mode " + mode);
    await run(browser, errors);
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
