// End-to-end tests of ringway.js in a real browser (headless Chromium through
// playwright-core), against real ringway nodes started here. Run by
// scripts/browser-test.sh, which installs Chromium and playwright-core first.
//
//   RINGWAY_BIN=target/release/ringway CHROMIUM=/usr/bin/chromium node tests/browser/run.mjs
//
// Each test prints PASS or FAIL with the reason; the exit status is the number of
// failures. The demo page's screenshot is written to $SCREENSHOT
// (default target/browser/demo.png).

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import net from "node:net";
import { chromium } from "playwright-core";

const BIN = process.env.RINGWAY_BIN || "target/release/ringway";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = process.env.SCREENSHOT || "target/browser/demo.png";
const SECRET = "browser-test-token-secret-0123456789";
const MESH_SECRET = "browser-test-mesh-secret-0123";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {}
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A ringway node as a child process, on fixed ports (a restart reuses them). */
class Node {
  constructor(name, args = []) {
    this.name = name;
    this.args = args;
  }
  async ports() {
    this.ws = await freePort();
    this.api = await freePort();
    return this;
  }
  get http() {
    return `http://127.0.0.1:${this.ws}`;
  }
  async start() {
    this.exited = false;
    this.proc = spawn(
      BIN,
      ["--node-id", this.name, "--listen", `127.0.0.1:${this.ws}`, "--api-listen", `127.0.0.1:${this.api}`,
       "--no-pin", "--token-secret", SECRET, ...this.args],
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RINGWAY_LOG: "warn" } },
    );
    this.proc.stderr.on("data", () => {});
    this.exit = new Promise((r) => this.proc.on("exit", (code, sig) => { this.exited = true; r({ code, sig }); }));
    await until(`${this.name} healthz`, async () => (await fetch(`http://127.0.0.1:${this.api}/healthz`)).ok);
    return this;
  }
  async stop(signal = "SIGKILL") {
    if (this.exited) return;
    this.proc.kill(signal);
    await this.exit;
  }
  async api_(path, body) {
    const r = await fetch(`http://127.0.0.1:${this.api}${path}`, body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json();
  }
}

function token(sub, ttlSeconds) {
  return execFileSync(BIN, ["token", "--secret", SECRET, "--sub", sub, "--ttl", `${ttlSeconds}s`]).toString().trim();
}

const results = [];
// RINGWAY_BROWSER_ONLY=text runs only the tests whose name contains it.
const only = process.env.RINGWAY_BROWSER_ONLY;
async function test(name, fn) {
  if (only && !name.includes(only)) return;
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`PASS ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const profile = mkdtempSync(join(tmpdir(), "ringway-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1100, height: 700 },
});

async function openDemo(node, query) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log(`  page error: ${e}`));
  await page.goto(`${node.http}/?${query}`);
  await page.waitForFunction(() => window.rw && window.rw.state === "open");
  return page;
}

// ---------------------------------------------------------------------------------

await test("two pages chat through one node and see each other in presence", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const room = "demo:lobby";
    const alice = await openDemo(node, `name=alice&room=${room}`);
    const bob = await openDemo(node, `name=bob&room=${room}`);
    await alice.fill("#text", "hello from alice");
    await alice.press("#text", "Enter");
    await bob.waitForFunction(() => document.querySelector("#log").innerText.includes("hello from alice"));
    await bob.fill("#text", "hi alice");
    await bob.press("#text", "Enter");
    await alice.waitForFunction(() => document.querySelector("#log").innerText.includes("hi alice"));
    const roster = await alice.evaluate((room) => window.rw.presence(room), room);
    const users = roster.users.map((u) => u.user).sort();
    assert(JSON.stringify(users) === JSON.stringify(["guest:alice", "guest:bob"]), `roster ${JSON.stringify(roster)}`);
    await alice.waitForFunction(() => document.querySelector("#people").innerText.includes("bob"));
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await alice.screenshot({ path: SCREENSHOT });
    await alice.close();
    await bob.close();
  } finally {
    await node.stop();
  }
});

await test("a drained and restarted node: both pages reconnect with backoff and resume without a missed or repeated message", async () => {
  const n1 = await new Node("n1").ports();
  const n2 = await new Node("n2").ports();
  const [m1, m2] = [await freePort(), await freePort()];
  n1.args = ["--mesh-listen", `127.0.0.1:${m1}`, "--peer", `n2=127.0.0.1:${m2}`, "--mesh-secret", MESH_SECRET, "--drain-window", "1"];
  n2.args = ["--mesh-listen", `127.0.0.1:${m2}`, "--peer", `n1=127.0.0.1:${m1}`, "--mesh-secret", MESH_SECRET];
  await n1.start();
  await n2.start();
  try {
    await until("the mesh", async () => (await n1.api_("/v1/cluster")).peers[0].up);
    // A room owned by n2, so its history survives n1's restart.
    let room;
    for (let k = 0; !room; k++) {
      const r = await n1.api_(`/v1/rooms/demo:resume${k}`);
      if (r.owner === "n2") room = r.room;
    }
    const pages = [await openDemo(n1, `name=carol&room=${room}`), await openDemo(n1, `name=dave&room=${room}`)];
    for (const p of pages) {
      await p.evaluate((room) => {
        window.got = [];
        window.events = { resync: 0, retry: 0, welcome: 0, draining: 0 };
        for (const e of Object.keys(window.events)) window.rw.addEventListener(e, () => window.events[e]++);
        window.rw.subscribe(room, (d) => window.got.push(d.text));
      }, room);
    }
    // A fresh subscription starts after the latest message: publish once both
    // pages are in (the demo page subscribed on load), or the first messages are
    // (rightly) not theirs.
    for (const p of pages) {
      await p.waitForFunction((room) => window.rw.rooms.get(room)?.epoch != null, room, { timeout: 10000 });
    }
    const N = 120;
    let k = 0;
    const publisher = (async () => {
      for (k = 1; k <= N; k++) {
        await n2.api_("/v1/publish", { room, data: { from: "api", text: k } });
        await sleep(40);
      }
    })();
    await until("some messages", async () => k > 20);
    await n1.stop("SIGTERM"); // drains: reconnect hint, then 1012, then exit
    await n1.start();
    await publisher;
    for (const p of pages) {
      await p.waitForFunction((n) => window.got.length >= n, N, { timeout: 20000 }).catch(() => {});
      const { got, events } = await p.evaluate(() => ({ got: window.got, events: window.events }));
      const expected = Array.from({ length: N }, (_, i) => i + 1);
      assert(JSON.stringify(got) === JSON.stringify(expected),
        `got ${got.length} messages: ${JSON.stringify(got.slice(0, 5))}... missing ${expected.filter((x) => !got.includes(x)).slice(0, 10)}; events ${JSON.stringify(events)}`);
      assert(events.draining >= 1, `no drain hint seen: ${JSON.stringify(events)}`);
      assert(events.retry >= 1 && events.welcome >= 1, `no reconnect: ${JSON.stringify(events)}`);
      assert(events.resync === 0, `unexpected resync: ${JSON.stringify(events)}`);
      await p.close();
    }
  } finally {
    await n1.stop();
    await n2.stop();
  }
});

await test("a stale epoch triggers resync", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await browser.newPage();
    await page.goto(`${node.http}/client.js`); // any page of the node's origin
    const detail = await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      const rw = new Ringway(url, { connect: false });
      rw.rooms.set("demo:stale", { handlers: new Set(), epoch: "00000000000000aa", seq: 3 });
      const resync = new Promise((r) => rw.addEventListener("resync", (e) => r(e.detail)));
      rw.connect();
      const d = await Promise.race([resync, new Promise((_, j) => setTimeout(() => j(new Error("no resync")), 5000))]);
      rw.close();
      return d;
    }, `ws://127.0.0.1:${node.ws}/ws`);
    assert(detail.room === "demo:stale" && detail.previous.epoch === "00000000000000aa" && detail.epoch !== "00000000000000aa",
      JSON.stringify(detail));
    await page.close();
  } finally {
    await node.stop();
  }
});

await test("a short-lived token is refreshed without dropping the socket", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ringway-cfg-"));
  const cfg = join(dir, "ringway.toml");
  writeFileSync(cfg, "[auth]\nrefresh_margin_s = 3\nrefresh_grace_s = 1\n[heartbeat]\ntick_ms = 100\n");
  const node = await (await new Node("n1", ["--config", cfg, "--require-auth", "--no-demo"]).ports()).start();
  try {
    const page = await browser.newPage();
    await page.exposeFunction("mintToken", () => token("erin", 5));
    await page.goto(`${node.http}/client.js`);
    const seen = await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      const counts = { welcome: 0, refreshed: 0, disconnect: 0, tokens: 0 };
      const rw = new Ringway(url, { token: async () => { counts.tokens++; return window.mintToken(); } });
      for (const e of ["welcome", "refreshed", "disconnect"]) rw.addEventListener(e, () => counts[e]++);
      await new Promise((r) => setTimeout(r, 9000)); // two token lifetimes
      counts.state = rw.state;
      counts.user = rw.user;
      rw.close();
      return counts;
    }, `ws://127.0.0.1:${node.ws}/ws`);
    assert(seen.user === "erin", JSON.stringify(seen));
    assert(seen.welcome === 1 && seen.disconnect === 0 && seen.state === "open", `socket dropped: ${JSON.stringify(seen)}`);
    assert(seen.refreshed >= 2 && seen.tokens >= 3, `not refreshed: ${JSON.stringify(seen)}`);
    await page.close();
  } finally {
    await node.stop();
  }
});

await test("200 sockets from one browser context stay healthy", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await browser.newPage();
    await page.goto(`${node.http}/client.js`);
    await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      window.many = [];
      window.received = 0;
      for (let i = 0; i < 200; i++) {
        const rw = new Ringway(url);
        rw.subscribe("demo:many", () => window.received++);
        window.many.push(rw);
      }
    }, `ws://127.0.0.1:${node.ws}/ws`);
    await page.waitForFunction(() => window.many.every((rw) => rw.state === "open"), null, { timeout: 20000 });
    // Every one subscribed: the room's owner counts them in its metrics via delivery.
    await sleep(500);
    for (let m = 1; m <= 3; m++) {
      await node.api_("/v1/publish", { room: "demo:many", data: m });
    }
    await page.waitForFunction(() => window.received === 600, null, { timeout: 10000 });
    const states = await page.evaluate(() => window.many.map((rw) => rw.state));
    assert(states.every((s) => s === "open"), `states ${states}`);
    await page.close();
  } finally {
    await node.stop();
  }
});

await test("the heartbeat watchdog notices a dead socket and reconnects", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await browser.newPage();
    await page.goto(`${node.http}/client.js`);
    await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      window.log = [];
      window.w = new Ringway(url, { heartbeat: 500 });
      for (const e of ["error", "retry", "welcome"]) window.w.addEventListener(e, (ev) => window.log.push([e, ev.detail && ev.detail.reason]));
      window.w.subscribe("demo:watch", () => {});
    }, `ws://127.0.0.1:${node.ws}/ws`);
    await page.waitForFunction(() => window.w.state === "open");
    // Freeze the node: its sockets stay open but nothing comes back, like a dead
    // peer behind a NAT that dropped the flow.
    node.proc.kill("SIGSTOP");
    await page.waitForFunction(() => window.w.state === "reconnecting", null, { timeout: 5000 });
    const log = await page.evaluate(() => window.log);
    assert(log.some(([e, r]) => e === "error" && /no traffic/.test(r || "")), JSON.stringify(log));
    node.proc.kill("SIGCONT");
    await page.waitForFunction(() => window.w.state === "open", null, { timeout: 20000 });
    await page.close();
  } finally {
    node.proc.kill("SIGCONT");
    await node.stop();
  }
});

await browser.close();
const failed = results.filter((r) => !r.ok).length;
console.log(`browser tests: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed);
