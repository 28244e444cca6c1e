// End-to-end tests of ringway.js in a real browser (headless Chromium through
// playwright-core), against real ringway nodes started here. Run by
// scripts/browser-test.sh, which installs Chromium and playwright-core first.
//
//   RINGWAY_BIN=target/release/ringway CHROMIUM=/usr/bin/chromium node tests/browser/run.mjs
//
// Each test prints PASS or FAIL with the reason; the exit status is the number of
// failures. The demo page's screenshot is written to $SCREENSHOT
// (default target/browser/demo.png).
//
// RINGWAY_CLIENT_DIR=src/client serves /client.js and the demo page from that
// directory instead of the copies built into the binary, so changes to the client
// can be tested without rebuilding ringway.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
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

/** A token for `sub`; `extra`: more `ringway token` flags (`--rooms`, `--sub-rooms`). */
function token(sub, ttlSeconds, extra = []) {
  return execFileSync(BIN, ["token", "--secret", SECRET, "--sub", sub, "--ttl", `${ttlSeconds}s`, ...extra]).toString().trim();
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

// SIGSTOP, and wait until every thread of the process is stopped: kill() returns
// before a busy machine gets round to stopping them, and a test that counts on the
// node not answering must not race it.
async function stopProcess(proc) {
  proc.kill("SIGSTOP");
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const states = readdirSync(`/proc/${proc.pid}/task`).map((t) => {
      const stat = readFileSync(`/proc/${proc.pid}/task/${t}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    });
    if (states.every((s) => s === "T" || s === "t")) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("the node did not stop within 5 s of SIGSTOP");
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const CLIENT_DIR = process.env.RINGWAY_CLIENT_DIR;
const profile = mkdtempSync(join(tmpdir(), "ringway-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         // Pages served by the route below do not come from a loopback address, so
         // Chromium would block their sockets to one (local network access checks).
         ...(CLIENT_DIR ? ["--disable-features=LocalNetworkAccessChecks"] : [])],
  viewport: { width: 1100, height: 700 },
});

if (CLIENT_DIR) {
  const files = { "/client.js": ["ringway.js", "text/javascript; charset=utf-8"], "/": ["demo.html", "text/html; charset=utf-8"] };
  await browser.route((url) => url.hostname === "127.0.0.1" && url.pathname in files, (route) => {
    const [file, contentType] = files[new URL(route.request().url()).pathname];
    return route.fulfill({ status: 200, contentType, body: readFileSync(join(CLIENT_DIR, file)) });
  });
  console.log(`(client served from ${CLIENT_DIR})`);
}

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

await test("Chromium negotiates permessage-deflate with its defaults, and compressed messages arrive both ways", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await browser.newPage();
    await page.goto(`${node.http}/client.js`);
    const text = "a chat message that repeats itself, ".repeat(40);
    const ready = page.evaluate(async ([url, text]) => {
      const ws = new WebSocket(url, ["ringway.v1"]);
      const got = [];
      ws.onmessage = (e) => got.push(JSON.parse(e.data));
      await new Promise((r) => { ws.onopen = r; });
      ws.send(JSON.stringify({ type: "sub", room: "demo:zip" }));
      while (!got.some((m) => m.type === "subscribed")) await new Promise((r) => setTimeout(r, 10));
      // Compressed by the browser on the way in, by the node on the way out.
      ws.send(JSON.stringify({ type: "pub", room: "demo:zip", data: { text }, ref: 1 }));
      window.__zip = { ws, got };
      return ws.extensions;
    }, [`ws://127.0.0.1:${node.ws}/ws`, text]);
    const extensions = await ready;
    assert(extensions.startsWith("permessage-deflate"), `negotiated: ${JSON.stringify(extensions)}`);
    await node.api_("/v1/publish", { room: "demo:zip", data: { text, n: 2 } });
    const msgs = await page.evaluate(async () => {
      const { got } = window.__zip;
      const deadline = Date.now() + 5000;
      while (got.filter((m) => m.type === "msg").length < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      window.__zip.ws.close();
      return got.filter((m) => m.type === "msg");
    });
    assert(msgs.length === 2 && msgs.every((m) => m.data.text === text), JSON.stringify(msgs).slice(0, 300));
    const metrics = await (await fetch(`http://127.0.0.1:${node.api}/metrics`)).text();
    const count = (name) => Number((metrics.match(new RegExp(`^${name} (\\d+)`, "m")) || [])[1]);
    assert(count("ringway_inflate_messages_total") >= 1, "the browser's publish came compressed");
    assert(count("ringway_deflate_messages_total") >= 2, "both messages went out compressed");
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
    await stopProcess(node.proc);
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

/** A page on the node's origin with nothing in it but access to /client.js. */
async function blankPage(node, page) {
  page = page || await browser.newPage();
  page.on("pageerror", (e) => console.log(`  page error: ${e}`));
  await page.goto(`${node.http}/client.js`);
  return page;
}

await test("publish() resolves with its ack, stamps an idempotency key once and rejects a forbidden room with code forbidden", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await blankPage(node);
    await page.exposeFunction("mintToken", () => token("pat", 300, ["--rooms", "pub:ok", "--sub-rooms", "pub:read"]));
    const r = await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      const out = { got: [], unhandled: 0 };
      window.addEventListener("unhandledrejection", () => out.unhandled++);
      const rw = new Ringway(url, { token: () => window.mintToken() });
      const subscribed = new Promise((r) => rw.addEventListener("subscribed", (e) => r(e.detail)));
      rw.subscribe("pub:ok", (data, msg) => out.got.push([msg.seq, data.n]));
      out.subscribed = await subscribed;
      const fail = (e) => ({ name: e.name, code: e.code, reason: e.reason, room: e.room });
      out.a1 = await rw.publish("pub:ok", { n: 1 });
      out.a2 = await rw.publish("pub:ok", { n: 2 }, { idempotencyKey: "order-17" });
      out.a3 = await rw.publish("pub:ok", { n: 3 }, { idempotencyKey: "order-17" });
      out.forbidden = await rw.publish("pub:read", { n: 4 }).then((a) => ({ resolved: a }), fail);
      out.sent = await rw.send("pat", { n: 8 }, { idempotencyKey: true });
      out.stateAfter = rw.state;
      await new Promise((r) => setTimeout(r, 300)); // any late msg
      rw.close();
      rw.publish("pub:ok", { n: 5 }); // ignored: rejects, unseen
      out.closed = await rw.publish("pub:ok", { n: 6 }).then((a) => ({ resolved: a }), fail);
      await new Promise((r) => setTimeout(r, 300)); // an unhandled rejection would be reported by now
      return out;
    }, `ws://127.0.0.1:${node.ws}/ws`);
    const s = JSON.stringify(r);
    const { epoch, seq } = r.subscribed;
    assert(r.a1 && r.a1.room === "pub:ok" && r.a1.epoch === epoch && r.a1.seq === seq + 1 && r.a1.duplicate === false, `first ack: ${s}`);
    assert(r.a2.seq === seq + 2 && r.a2.duplicate === false, `keyed ack: ${s}`);
    assert(r.a3.seq === r.a2.seq && r.a3.duplicate === true, `repeated key not a duplicate: ${s}`);
    assert(JSON.stringify(r.got) === JSON.stringify([[seq + 1, 1], [seq + 2, 2]]), `delivered: ${s}`);
    assert(r.forbidden.name === "RingwayError" && r.forbidden.code === "forbidden" && r.forbidden.room === "pub:read" && r.forbidden.reason,
      `forbidden publish: ${s}`);
    assert(r.stateAfter === "open", `closed after one refusal: ${s}`);
    assert(r.sent.room === "user:pat" && Number.isInteger(r.sent.seq) && r.sent.duplicate === false, `send ack: ${s}`);
    assert(r.closed.code === "not_connected", `publish while closed: ${s}`);
    assert(r.unhandled === 0, `an ignored publish reported an unhandled rejection: ${s}`);
    await page.close();
  } finally {
    await node.stop();
  }
});

await test("a publish cut off by a dead socket rejects with disconnected, and its retry with the same key is delivered once", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await blankPage(node);
    await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      window.got = [];
      const listener = new Ringway(url);
      listener.subscribe("pub:retry", (data, msg) => window.got.push([msg.seq, data]));
      window.w = new Ringway(url, { heartbeat: 500 });
      await new Promise((r) => listener.addEventListener("subscribed", r));
    }, `ws://127.0.0.1:${node.ws}/ws`);
    await page.waitForFunction(() => window.w.state === "open");
    await stopProcess(node.proc); // the publish goes out, its ack cannot come back
    const first = await page.evaluate(() => window.w.publish("pub:retry", "once", { idempotencyKey: true })
      .then((a) => ({ resolved: a }), (e) => ({ code: e.code, idempotencyKey: e.idempotencyKey })));
    node.proc.kill("SIGCONT");
    assert(first.code === "disconnected" && /^[0-9a-f]{32}$/.test(first.idempotencyKey || ""), `first attempt: ${JSON.stringify(first)}`);
    await page.waitForFunction(() => window.w.state === "open", null, { timeout: 20000 });
    const retry = await page.evaluate((key) => window.w.publish("pub:retry", "once", { idempotencyKey: key }), first.idempotencyKey);
    await sleep(500);
    const got = await page.evaluate(() => window.got);
    assert(got.length === 1 && got[0][1] === "once" && got[0][0] === retry.seq, `delivered ${JSON.stringify(got)}, retry acked ${JSON.stringify(retry)}`);
    await page.close();
  } finally {
    node.proc.kill("SIGCONT");
    await node.stop();
  }
});

await test("a page reloaded with a saved cursor gets exactly the messages it missed", async () => {
  const node = await (await new Node("n1").ports()).start();
  const room = "resume:page";
  const url = `ws://127.0.0.1:${node.ws}/ws`;
  try {
    const page = await blankPage(node);
    await page.evaluate(async ({ url, room }) => {
      const { Ringway } = await import("/client.js");
      window.got = [];
      window.rw = new Ringway(url);
      const subscribed = new Promise((r) => window.rw.addEventListener("subscribed", r));
      window.rw.subscribe(room, (data) => window.got.push(data));
      await subscribed;
    }, { url, room });
    for (let n = 1; n <= 3; n++) await node.api_("/v1/publish", { room, data: n });
    await page.waitForFunction(() => window.got.length === 3);
    const saved = await page.evaluate((room) => {
      localStorage.setItem("cursor", JSON.stringify(window.rw.cursor(room)));
      return { cursor: window.rw.cursor(room), none: window.rw.cursor("resume:not-subscribed") };
    }, room);
    assert(saved.cursor && saved.cursor.seq === 3 && /^[0-9a-f]{16}$/.test(saved.cursor.epoch) && saved.none === null,
      `cursor ${JSON.stringify(saved)}`);
    await page.goto("about:blank"); // the page is away
    for (let n = 4; n <= 6; n++) await node.api_("/v1/publish", { room, data: n });
    await blankPage(node, page);
    await page.evaluate(async ({ url, room }) => {
      const { Ringway } = await import("/client.js");
      window.got = [];
      window.seen = { resync: 0, subscribed: [] };
      window.rw = new Ringway(url);
      window.rw.addEventListener("resync", () => window.seen.resync++);
      window.rw.addEventListener("subscribed", (e) => window.seen.subscribed.push(e.detail));
      window.rw.subscribe(room, (data, msg) => window.got.push([msg.seq, data]), { since: JSON.parse(localStorage.getItem("cursor")) });
    }, { url, room });
    await page.waitForFunction(() => window.got.length >= 3, null, { timeout: 5000 }).catch(() => {});
    await node.api_("/v1/publish", { room, data: 7 }); // and live again after the replay
    await page.waitForFunction(() => window.got.length >= 4, null, { timeout: 5000 }).catch(() => {});
    await sleep(200);
    const r = await page.evaluate(() => ({ got: window.got, seen: window.seen }));
    assert(JSON.stringify(r.got) === JSON.stringify([[4, 4], [5, 5], [6, 6], [7, 7]]), `after the reload: ${JSON.stringify(r)}`);
    assert(r.seen.resync === 0 && r.seen.subscribed.length === 1 && r.seen.subscribed[0].recovered === true, `not a resume: ${JSON.stringify(r)}`);
    await page.close();
  } finally {
    await node.stop();
  }
});

await test("a message's from is its publisher's user, not what it wrote in data, and the demo page shows that", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const room = "demo:from";
    const alice = await openDemo(node, `name=alice&room=${room}`);
    const bob = await openDemo(node, `name=bob&room=${room}`);
    for (const p of [alice, bob]) {
      await p.waitForFunction((room) => window.rw.cursor(room) !== null, room);
    }
    await bob.evaluate((room) => {
      window.froms = [];
      window.rw.subscribe(room, (data, msg) => window.froms.push([msg.from ?? null, data.from ?? null]));
    }, room);
    await alice.evaluate((room) => window.rw.publish(room, { from: "mallory", text: "forged by alice" }), room);
    await node.api_("/v1/publish", { room, data: { from: "mallory", text: "from the app" } });
    await bob.waitForFunction(() => document.querySelector("#log").innerText.includes("from the app"));
    const froms = await bob.evaluate(() => window.froms);
    assert(JSON.stringify(froms) === JSON.stringify([["guest:alice", "mallory"], [null, "mallory"]]), `msg.from: ${JSON.stringify(froms)}`);
    const shown = (p) => p.evaluate(() => [...document.querySelectorAll("#log .msg")].map((m) =>
      [m.querySelector(".who").firstChild.textContent, m.classList.contains("mine"), m.lastChild.textContent]));
    await alice.waitForFunction(() => document.querySelector("#log").innerText.includes("from the app"));
    const [onAlice, onBob] = [await shown(alice), await shown(bob)];
    assert(JSON.stringify(onBob) === JSON.stringify([["alice", false, "forged by alice"], ["anonymous", false, "from the app"]]), `bob's page: ${JSON.stringify(onBob)}`);
    assert(JSON.stringify(onAlice) === JSON.stringify([["alice", true, "forged by alice"], ["anonymous", false, "from the app"]]), `alice's page: ${JSON.stringify(onAlice)}`);
    await alice.close();
    await bob.close();
  } finally {
    await node.stop();
  }
});

await test("POST /v1/disconnect: the page gets kicked and stays closed, or comes back when reconnect is true", async () => {
  const node = await (await new Node("n1").ports()).start();
  try {
    const page = await blankPage(node);
    await page.exposeFunction("mintToken", () => token("kim", 300));
    await page.evaluate(async (url) => {
      const { Ringway } = await import("/client.js");
      window.log = { kicked: [], disconnect: [], welcome: 0, retry: 0 };
      window.rw = new Ringway(url, { token: () => window.mintToken(), backoffBase: 50, backoffCap: 200 });
      window.rw.addEventListener("kicked", (e) => window.log.kicked.push(e.detail));
      window.rw.addEventListener("disconnect", (e) => window.log.disconnect.push(e.detail.code));
      window.rw.addEventListener("welcome", () => window.log.welcome++);
      window.rw.addEventListener("retry", () => window.log.retry++);
    }, `ws://127.0.0.1:${node.ws}/ws`);
    await page.waitForFunction(() => window.rw.state === "open");
    const answer = await node.api_("/v1/disconnect", { user: "kim", reason: "banned", reconnect: false });
    assert(answer.disconnected === 1, `disconnect answered ${JSON.stringify(answer)}`);
    await page.waitForFunction(() => window.log.disconnect.length === 1, null, { timeout: 5000 }).catch(() => {});
    await sleep(3000); // a reconnect would have happened by now (backoff at most 200 ms)
    let r = await page.evaluate(() => ({ log: window.log, state: window.rw.state }));
    assert(JSON.stringify(r.log.kicked) === JSON.stringify([{ code: 4010, reason: "banned", reconnect: false }]), `kicked: ${JSON.stringify(r)}`);
    assert(r.state === "closed" && r.log.retry === 0 && r.log.welcome === 1 && r.log.disconnect[0] === 4010, `did not stay closed: ${JSON.stringify(r)}`);
    // connect() brings it back; a kick with reconnect: true reconnects on its own.
    await page.evaluate(() => window.rw.connect());
    await page.waitForFunction(() => window.log.welcome === 2, null, { timeout: 5000 });
    await node.api_("/v1/disconnect", { user: "kim", reason: "move along", reconnect: true });
    await page.waitForFunction(() => window.log.welcome === 3 && window.rw.state === "open", null, { timeout: 5000 }).catch(() => {});
    r = await page.evaluate(() => ({ log: window.log, state: window.rw.state }));
    assert(r.log.kicked.length === 2 && r.log.kicked[1].reconnect === true && r.state === "open" && r.log.welcome === 3,
      `did not come back: ${JSON.stringify(r)}`);
    await page.evaluate(() => window.rw.close());
    await page.close();
  } finally {
    await node.stop();
  }
});

await browser.close();
const failed = results.filter((r) => !r.ok).length;
console.log(`browser tests: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed);
