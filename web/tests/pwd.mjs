// Browser tests of the play-with-docker compatibility (docs/pwd.md) against a real `sandpit
// serve`: a training page on another origin drives sandpit through pwd/client.js (the SDK's
// calling conventions), sandpit's own page shows the same shells, a page of an origin the
// server does not list gets nothing, and stack links deploy from the allowed source only.
// Run through `web/tests/run pwd`. Environment:
//   SANDPIT_URL             the server as http://localhost:PORT (port links are *.localhost)
//   SANDPIT_PWD_PAGE_PORT   a free port: the training page, listed with --pwd-origin
//                           http://127.0.0.1:PORT and --stack-source http://127.0.0.1:PORT/stacks/
//   SANDPIT_PWD_OTHER_PORT  a free port: a site the server does not list
// Prints {"bench":"pwd_page_to_prompts","ms":...}: page load to both prompts (not asserted).

import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFile, mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const BASE = (process.env.SANDPIT_URL || "").replace(/\/+$/, "");
const PAGE_PORT = Number(process.env.SANDPIT_PWD_PAGE_PORT);
const OTHER_PORT = Number(process.env.SANDPIT_PWD_OTHER_PORT);
const OUT = resolve(process.env.SANDPIT_WEB_OUT || join(here, "out"));
const CHROMIUM = process.env.SANDPIT_CHROMIUM || "/usr/bin/chromium";
const DEMO_STACK = "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 1\n";

if (!/^https?:\/\/localhost:\d+$/.test(BASE) || !PAGE_PORT || !OTHER_PORT) {
  console.error("web/tests/pwd.mjs: set SANDPIT_URL=http://localhost:PORT, SANDPIT_PWD_PAGE_PORT and SANDPIT_PWD_OTHER_PORT");
  process.exit(2);
}

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
const log = (msg) => console.error(`[pwd-tests] ${msg}`);

const consoleErrors = [];
/** Console errors a step provokes on purpose (CORS refusals, a refused start). */
let expected = null;
const sessions = new Set();

async function api(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A static site on 127.0.0.1:port: the training page, its client, xterm.js and a stack file.
 * It records every path asked for. */
function site(port) {
  const asked = [];
  const xterm = join(here, "../node_modules/@xterm/xterm");
  const files = {
    "/": [join(here, "pwd/index.html"), "text/html"],
    "/client.js": [join(here, "pwd/client.js"), "text/javascript"],
    "/xterm.js": [join(xterm, "lib/xterm.js"), "text/javascript"],
    "/xterm.css": [join(xterm, "css/xterm.css"), "text/css"],
  };
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    asked.push(path);
    if (path === "/stacks/demo.yml") return res.writeHead(200, { "content-type": "text/yaml" }).end(DEMO_STACK);
    const f = files[path];
    if (path === "/favicon.ico") return res.writeHead(204).end();
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": f[1] }).end(await readFile(f[0]));
  });
  return new Promise((ok) => server.listen(port, "127.0.0.1", () => ok({ server, asked })));
}

async function newPage(context, label) {
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" && !(expected && expected.test(m.text()))) consoleErrors.push(`${label}: ${m.text()}`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`${label}: page exception: ${e.message}`));
  return page;
}

/** The text of instance `i`'s terminal on the training page, or of `node` on sandpit's. */
const readers = {
  pwd: (i) => window.pwdTest.text(i),
  own: (node) => window.sandpit?.text(node),
};

/** Waits until the terminal (`kind` of `readers`, `arg`) shows `re`; on timeout, its text. */
async function waitTerm(page, kind, arg, re, timeout = 60_000) {
  const wait = kind === "pwd"
    ? page.waitForFunction(([i, src, f]) => new RegExp(src, f).test(window.pwdTest.text(i) ?? ""), [arg, re.source, re.flags], { timeout, polling: 100 })
    : page.waitForFunction(([n, src, f]) => new RegExp(src, f).test(window.sandpit?.text(n) ?? ""), [arg, re.source, re.flags], { timeout, polling: 100 });
  try {
    await wait;
  } catch {
    const text = await page.evaluate(readers[kind], arg).catch(() => null);
    throw new Failure(`${kind} terminal ${arg} never showed ${re}; it has:\n${String(text).trimEnd().split("\n").slice(-20).join("\n")}`);
  }
}
const pwdTerm = (page, i, re, timeout) => waitTerm(page, "pwd", i, re, timeout);
const ownTerm = (page, node, re, timeout) => waitTerm(page, "own", node, re, timeout);
const prompt = (node) => new RegExp(`@${node}\\b[^\\n]*[#$]\\s*$`, "m");

/** The training page drives a session through the PWD API; sandpit's page shows the same. */
async function sdk(browser) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 1400 } });
  const page = await newPage(context, "training page");
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${PAGE_PORT}/?base=${encodeURIComponent(BASE)}`);
  await pwdTerm(page, 0, prompt("node1"));
  await pwdTerm(page, 1, prompt("node2"));
  const bench = { bench: "pwd_page_to_prompts", ms: Date.now() - t0 };
  console.log(JSON.stringify(bench));
  const sid = await page.evaluate(() => window.pwd.sessionId);
  sessions.add(sid);
  check(await page.evaluate(() => window.pwd.baseUrl) === BASE, "the session's hostname is the server's");

  await page.locator("#echo").click();
  await pwdTerm(page, 0, /^pwd-42$/m);
  await page.locator("#hostname").click();
  await pwdTerm(page, 1, /^node2$/m);
  const status = await page.evaluate(
    () => new Promise((ok) => window.pwd.exec("node1", ["sh", "-c", "exit 7"], (e, r) => ok(e ? String(e) : r.status_code))),
  );
  check(status === 7, `exec answered ${status}, want status_code 7`);

  // An app on a published port, opened by the page's port link.
  await page.locator("#nginx").click();
  await page
    .waitForFunction(() => (window.pwd.ports.node1 || []).includes(8080), null, { timeout: 120_000 })
    .catch(async () => {
      const text = await page.evaluate(() => window.pwdTest.text(0));
      throw new Failure(`node1 never published 8080; its terminal:\n${text.trimEnd().split("\n").slice(-15).join("\n")}`);
    });
  const [tab] = await Promise.all([context.waitForEvent("page"), page.locator("#port").click()]);
  await tab.waitForLoadState();
  check(tab.url().startsWith(`http://node1-${sid}-8080.direct.localhost:`), `the port link opened ${tab.url()}`);
  await tab.locator("text=Welcome to nginx").waitFor({ timeout: 30_000 });
  await tab.close();

  // An upload from the page's data attributes.
  await page.locator("#upload").click();
  await page.locator('#upload[data-uploaded="ok"]').waitFor();
  await page.locator("#cat").click();
  await pwdTerm(page, 0, /^uploaded from a training page/m);
  await page.screenshot({ path: join(OUT, "pwd-training-page.png"), fullPage: true });

  // The same shell in sandpit's own page.
  const own = await newPage(await browser.newContext(), "sandpit page");
  await own.goto(`${BASE}/s/${sid}`);
  await ownTerm(own, "node1", /^pwd-42$/m);
  await own.screenshot({ path: join(OUT, "pwd-same-shell.png") });

  const closed = await page.evaluate(() => new Promise((ok) => window.pwd.closeSession((e, s) => ok(e ? String(e) : s))));
  check(closed === 200, `closing answered ${closed}`);
  check((await api("GET", `/api/sessions/${sid}`)).status === 404, "the closed session is gone");
  sessions.delete(sid);
  await context.close();
}

/** A site the server does not list gets no session and no socket. */
async function cors(browser, other) {
  const s = await api("POST", "/api/sessions", {});
  check(s.status === 201, `a session for the socket check: ${JSON.stringify(s)}`);
  sessions.add(s.body.id);
  const context = await browser.newContext();
  const page = await newPage(context, "unlisted site");
  expected = /CORS|Failed to load resource|WebSocket connection|ERR_FAILED/;
  await page.goto(`http://127.0.0.1:${OTHER_PORT}/?base=${encodeURIComponent(BASE)}`);
  await page.waitForFunction(() => window.pwd.lastError !== null, null, { timeout: 30_000 });
  check(await page.evaluate(() => window.pwd.sessionId) === null, "the unlisted site got a session");
  const opened = await page.evaluate(
    ([base, sid]) =>
      new Promise((ok) => {
        const ws = new WebSocket(`${base.replace(/^http/, "ws")}/sessions/${sid}/ws/`);
        ws.onopen = () => ok("opened");
        ws.onclose = () => ok("refused");
      }),
    [BASE, s.body.id],
  );
  check(opened === "refused", `the unlisted site's WebSocket was ${opened}`);
  expected = null;
  await context.close();
  check(other.asked.every((p) => p !== "/x.yml"), "nothing was fetched from the unlisted site");
  await api("DELETE", `/api/sessions/${s.body.id}`);
  sessions.delete(s.body.id);
}

/** Stack links on sandpit's landing page: from the allowed source only. */
async function stack(browser, other) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await newPage(context, "stack link");
  const url = `http://127.0.0.1:${PAGE_PORT}/stacks/demo.yml`;
  await page.goto(`${BASE}/?stack=${encodeURIComponent(url)}&stack_name=demo`);
  await page.locator('[data-test="stack-note"]', { hasText: url }).waitFor();
  check((await page.locator("[data-template]").count()) === 0, "a stack link offers no templates");
  await page.locator('[data-test="start"]').click();
  await page.waitForURL(/\/s\/[0-9a-f]{32}/);
  const sid = /\/s\/([0-9a-f]{32})/.exec(page.url())[1];
  sessions.add(sid);
  await ownTerm(page, "node1", /Creating service demo_web/, 120_000);
  await page.screenshot({ path: join(OUT, "pwd-stack.png") });
  await api("DELETE", `/api/sessions/${sid}`);
  sessions.delete(sid);

  const refused = `http://127.0.0.1:${OTHER_PORT}/x.yml`;
  await page.goto(`${BASE}/?stack=${encodeURIComponent(refused)}&stack_name=bad`);
  expected = /status of 400/;
  await page.locator('[data-test="start"]').click();
  await page.locator('.error[role="alert"]', { hasText: "fetched only from" }).waitFor();
  expected = null;
  check(/\/\?stack=/.test(page.url()), "a refused stack stays on the landing page");
  check(!other.asked.includes("/x.yml"), "the refused source was not fetched");
  await context.close();
}

await mkdir(OUT, { recursive: true });
const pageSite = await site(PAGE_PORT);
const otherSite = await site(OTHER_PORT);
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, chromiumSandbox: false });
let failed = false;
try {
  for (const [name, run] of Object.entries({ sdk, cors, stack })) {
    const t = Date.now();
    log(`${name}: start`);
    await run(browser, otherSite);
    log(`${name}: ok in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    if (consoleErrors.length) break;
  }
} catch (e) {
  failed = true;
  log(`FAILED: ${e instanceof Failure ? e.message : e.stack || e}`);
} finally {
  await browser.close().catch(() => {});
  for (const sid of sessions) await api("DELETE", `/api/sessions/${sid}`).catch(() => {});
  pageSite.server.close();
  otherSite.server.close();
}
if (consoleErrors.length) {
  failed = true;
  log(`FAILED: ${consoleErrors.length} console error(s):\n  ${consoleErrors.join("\n  ")}`);
}
log(failed ? "pwd tests failed" : "pwd tests passed");
process.exit(failed ? 1 : 0);
