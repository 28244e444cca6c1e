// ringway.js: the browser client for ringway (protocol ringway.v1).
// Dependency-free ES module, served by every node at /client.js.
//
//   import { Ringway } from "/client.js";
//   const rw = new Ringway("wss://rt.example.com/ws", { token: () => fetchToken() });
//   rw.addEventListener("state", (e) => console.log(e.detail.state));
//   rw.addEventListener("resync", (e) => reloadRoom(e.detail.room));
//   const off = rw.subscribe("chat:42", (data, msg) => show(msg.from, data, msg.seq));
//   const { seq } = await rw.publish("chat:42", { text: "hi" });
//
// What it does for you:
// - reconnects with exponential backoff and full jitter,
//   delay = random(0, min(cap, base * 2^attempt)), and honours the server's
//   {"type":"reconnect","after_ms"} hint (sent when a node drains);
// - resumes every room from the last seq and epoch it delivered, so a reconnect
//   neither loses nor repeats a message while the room's history covers the gap;
//   when it cannot (`recovered: false`, or the room moved to another owner) it fires
//   `resync` so the app reloads that room's state;
// - watches the connection: with no traffic for the heartbeat interval it pings,
//   and with none for twice that it drops the socket and reconnects;
// - asks the token provider for a token on every connect and again on
//   `refresh_needed`, without dropping the socket.
//
// Who sent it: the handler's second argument is the whole `msg`; `msg.from` is the
// publisher's user id as the node knows it from the publisher's token (absent for
// anonymous publishers and for API publishes that name no user). Trust `msg.from`,
// never a name inside `data`: any client can write that.
//
// Acknowledged publishes: `publish()` and `send()` return a Promise of the ack,
// {room, epoch, seq, duplicate}, once the room's owner stamped the message. It
// rejects with a RingwayError whose `code` is the server's (`forbidden`,
// `bad_field`, `unavailable`, ...; `reason` says why), or one of:
//   "not_connected"  the socket was not open: nothing was sent;
//   "disconnected"   the socket dropped (or close() was called) before the ack:
//                    the message may or may not have been stamped;
//   "timeout"        no answer within `ackTimeout` (10 s; per call `timeout`),
//                    e.g. a message dropped by the rate limit (whose `rate_limited`
//                    error carries no ref): it may or may not have been stamped.
// Ignoring the Promise is fine (it never reports an unhandled rejection); the
// `error` event still fires for every error the server sends.
// To retry without the risk of a double delivery, give the publish an idempotency
// key and repeat it with the same key: the room's owner stamps a key once per
// sender within rooms.idempotency_window_s (300 s by default) and answers a repeat
// with the first seq and `duplicate: true`. `idempotencyKey: true` makes a random
// key; the error carries it as `err.idempotencyKey`:
//
//   async function publishSurely(room, data) {
//     let idempotencyKey = true;
//     for (;;) {
//       try { return await rw.publish(room, data, { idempotencyKey }); }
//       catch (e) {
//         if (!["disconnected", "timeout", "not_connected", "unavailable"].includes(e.code)) throw e;
//         idempotencyKey = e.idempotencyKey;
//         await new Promise((r) => setTimeout(r, 1000)); // or wait for "welcome"
//       }
//     }
//   }
//
// (Keys live with the room's owner: when a room moves to another owner, a new
// epoch, they are forgotten, so a retry across that move may deliver twice.)
//
// Resuming across a page reload: save `rw.cursor(room)` (e.g. in localStorage on
// every message or on `pagehide`) and pass it back as `subscribe(room, handler,
// { since })`: the messages published while the page was away are replayed first,
// or `resync` fires when the room's history no longer covers them.
//
// Kicked by the app (POST /v1/disconnect): the `kicked` event fires with
// {code, reason, reconnect}; with `reconnect: false` the client goes to `closed`
// after the close and does not come back on its own (call connect() to).
//
// Frame types this version does not know are ignored.

const PROTOCOL = "ringway.v1";

/** Connection states, in the order a connection goes through them. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** Full-jitter exponential backoff: random(0, min(cap, base * 2^attempt)). */
export function backoff(attempt, base, cap, random = Math.random) {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/**
 * A refused or unanswered publish or send: `code` is the server's error code, or
 * "not_connected", "disconnected" or "timeout" (see the header).
 */
export class RingwayError extends Error {
  constructor(code, reason, extra = {}) {
    super(`${code}: ${reason}`);
    this.name = "RingwayError";
    this.code = code;
    this.reason = reason;
    Object.assign(this, extra);
  }
}

/** A random idempotency key: 32 hex digits (crypto.getRandomValues). */
export function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// A saved cursor worth resuming from: {epoch: 16 hex digits, seq: integer >= 0}.
function validCursor(c) {
  return !!c && typeof c === "object" && typeof c.epoch === "string" && /^[0-9a-f]{16}$/i.test(c.epoch) &&
    Number.isSafeInteger(c.seq) && c.seq >= 0;
}

export class Ringway extends EventTarget {
  /**
   * @param {string} url  ws:// or wss:// URL of a node's client endpoint
   * @param {object} [options]
   * @param {() => (string|Promise<string>)} [options.token]  token provider
   * @param {number} [options.backoffBase=250]  ms
   * @param {number} [options.backoffCap=15000]  ms
   * @param {number} [options.heartbeat]  ms; default: the server's, from `welcome`
   * @param {boolean} [options.connect=true]  connect at once
   * @param {number} [options.ackTimeout=10000]  ms a publish or send waits for its ack
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { backoffBase: 250, backoffCap: 15000, connect: true, ackTimeout: 10000, ...options };
    this.state = State.CLOSED;
    this.user = null;
    this.node = null;
    this.attempt = 0;
    this.rooms = new Map(); // room -> { handlers: Set, epoch, seq }
    this.waiting = new Map(); // room -> [resolve] for presence()
    this.pending = new Map(); // ref -> { resolve, reject, timer, idempotencyKey } for publish() and send()
    this.nextRef = 1; // refs never repeat, so a late answer cannot settle a newer request
    this.ws = null;
    this.hint = null; // ms from a reconnect hint
    this.timer = null;
    this.watchdog = null;
    this.lastHeard = 0;
    this.heartbeat = this.options.heartbeat || 25000;
    this.stopped = false;
    if (this.options.connect) this.connect();
  }

  /** Open the connection (again, after close()). */
  connect() {
    this.stopped = false;
    if (this.ws || this.timer) return;
    this._open();
  }

  /** Close for good; no reconnect. Unanswered publishes reject with "disconnected". */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    this._stopWatchdog();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "client closed");
    }
    this._failPending("disconnected", "closed by the client");
    this._setState(State.CLOSED);
  }

  /**
   * Subscribe; `handler(data, msg)` gets every message of the room, in order
   * (`msg.from` is the publisher's user id; `msg.seq` its position).
   * `options.since`: a cursor saved from `cursor(room)` (e.g. before a page reload);
   * the subscription then resumes after it: the missed messages are replayed, or
   * `resync` fires. It applies when this call starts the room's subscription (not to
   * a room already subscribed); a missing or malformed cursor is ignored.
   * Returns a function that removes the handler (and leaves the room with the last).
   */
  subscribe(room, handler, options = {}) {
    let r = this.rooms.get(room);
    if (!r) {
      const since = options && options.since;
      r = validCursor(since)
        ? { handlers: new Set(), epoch: since.epoch, seq: since.seq }
        : { handlers: new Set(), epoch: null, seq: 0 };
      this.rooms.set(room, r);
      if (this.state === State.OPEN) this._sub(room, r);
    }
    if (handler) r.handlers.add(handler);
    return () => {
      if (handler) r.handlers.delete(handler);
      if (r.handlers.size === 0) this.unsubscribe(room);
    };
  }

  /** Leave a room and forget its cursor. */
  unsubscribe(room) {
    if (!this.rooms.delete(room)) return;
    this._send({ type: "unsub", room });
  }

  /**
   * Publish `data` (any JSON value) to a room. Options: `key` (conflation key),
   * `idempotencyKey` (1-128 bytes, or `true` for a random one), `timeout` (ms).
   * Returns a Promise of the ack {room, epoch, seq, duplicate}; it rejects with a
   * RingwayError (see the header). (A string third argument is the `key`, as before.)
   */
  publish(room, data, options = {}) {
    if (typeof options === "string") options = { key: options };
    const m = { type: "pub", room, data };
    if (options && options.key !== undefined) m.key = options.key;
    return this._request(m, room, options);
  }

  /**
   * Send `data` to every connection of `user`, on any node. Options:
   * `idempotencyKey`, `timeout`. Returns a Promise of the ack (its room is
   * `user:<user>`), as `publish()` does.
   */
  send(user, data, options = {}) {
    return this._request({ type: "send", user, data }, "user:" + user, options);
  }

  /** The room's roster: Promise of {room, users: [{user, connections}], connections}. */
  presence(room, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      if (!this._send({ type: "presence", room })) {
        reject(new Error("not connected"));
        return;
      }
      const list = this.waiting.get(room) || [];
      const t = setTimeout(() => reject(new Error("presence timed out")), timeoutMs);
      list.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
      this.waiting.set(room, list);
    });
  }

  /** The last delivered position of each room: {room: {epoch, seq}}. */
  cursors() {
    const out = {};
    for (const [room, r] of this.rooms) out[room] = { epoch: r.epoch, seq: r.seq };
    return out;
  }

  /**
   * The last delivered position of one room, {epoch, seq}, to save and pass back as
   * `subscribe(room, handler, { since })`; null when the room is not subscribed or
   * its position is not known yet (before its first `subscribed`).
   */
  cursor(room) {
    const r = this.rooms.get(room);
    if (!r || r.epoch === null) return null;
    return { epoch: r.epoch, seq: r.seq };
  }

  // ---- internals -------------------------------------------------------------

  async _open() {
    this._setState(this.attempt === 0 && !this.everOpened ? State.CONNECTING : State.RECONNECTING);
    let protocols = [PROTOCOL];
    if (this.options.token) {
      try {
        const token = await this.options.token();
        if (token) protocols.push("bearer." + token);
      } catch (e) {
        this._emit("error", { reason: "token provider failed: " + e });
        return this._retry();
      }
    }
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url, protocols);
    } catch (e) {
      this._emit("error", { reason: String(e) });
      return this._retry();
    }
    this.ws = ws;
    ws.onmessage = (ev) => this._onMessage(ev.data);
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => {}; // onclose follows with the details
  }

  _onClose(ws, ev) {
    if (this.ws !== ws) return;
    this.ws = null;
    this._stopWatchdog();
    this._emit("disconnect", { code: ev.code, reason: ev.reason });
    for (const [, list] of this.waiting) list.length = 0;
    this._failPending("disconnected", `the connection closed (${ev.code}) before the answer`);
    if (this.stopped) {
      this._setState(State.CLOSED);
      return;
    }
    this._retry();
  }

  _retry() {
    if (this.stopped) return;
    this._setState(State.RECONNECTING);
    const o = this.options;
    let delay = backoff(this.attempt, o.backoffBase, o.backoffCap);
    if (this.hint !== null) {
      // The node is draining and said when to come back: not before that, spread
      // a little so its clients do not return in one instant.
      delay = this.hint + Math.random() * o.backoffBase;
      this.hint = null;
    }
    this.attempt++;
    this._emit("retry", { attempt: this.attempt, delay });
    this.timer = setTimeout(() => {
      this.timer = null;
      this._open();
    }, delay);
  }

  _onMessage(text) {
    this.lastHeard = Date.now();
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    if (!m || typeof m !== "object") return;
    switch (m.type) {
      case "welcome":
        this.attempt = 0;
        this.everOpened = true;
        this.user = m.user || null;
        this.node = m.node;
        if (!this.options.heartbeat && m.heartbeat) this.heartbeat = m.heartbeat;
        this._setState(State.OPEN);
        this._startWatchdog();
        this._emit("welcome", m);
        for (const [room, r] of this.rooms) this._sub(room, r);
        break;
      case "subscribed": {
        const r = this.rooms.get(m.room);
        if (!r) break;
        const known = r.epoch !== null;
        if (!m.recovered && known) {
          // The gap cannot be replayed (history too old, or the room moved to a new
          // owner): the app must reload this room's state.
          this._emit("resync", { room: m.room, epoch: m.epoch, seq: m.seq, previous: { epoch: r.epoch, seq: r.seq } });
        }
        if (!m.recovered) {
          r.epoch = m.epoch;
          r.seq = m.seq;
        }
        this._emit("subscribed", m);
        break;
      }
      case "msg": {
        const r = this.rooms.get(m.room);
        if (!r) break;
        if (m.seq <= r.seq) break; // already delivered (a replay overlapping live)
        if (r.seq && m.seq > r.seq + 1) {
          this._emit("gap", { room: m.room, from: r.seq + 1, to: m.seq - 1 });
        }
        r.seq = m.seq;
        for (const h of r.handlers) {
          try {
            h(m.data, m);
          } catch (e) {
            console.error("ringway handler failed", e);
          }
        }
        this._emit("message", m);
        break;
      }
      case "presence": {
        const list = this.waiting.get(m.room);
        const resolve = list && list.shift();
        if (resolve) resolve(m);
        break;
      }
      case "join":
      case "leave":
        this._emit(m.type, m);
        break;
      case "refresh_needed":
        this._refresh();
        break;
      case "refreshed":
        this._emit("refreshed", m);
        break;
      case "reconnect":
        this.hint = m.after_ms;
        this._emit("draining", m);
        break;
      case "ack": {
        const p = this._takePending(m.ref);
        if (p) p.resolve({ room: m.room, epoch: m.epoch, seq: m.seq, duplicate: m.duplicate === true });
        break;
      }
      case "error": {
        const p = this._takePending(m.ref);
        if (p) {
          p.reject(new RingwayError(m.code, m.reason, { room: m.room, idempotencyKey: p.idempotencyKey }));
        }
        this._emit("error", m);
        break;
      }
      case "disconnect":
        // The app closes this connection; the close (m.code) follows. Not the
        // `disconnect` event, which reports every close.
        if (m.reconnect === false) {
          this.stopped = true;
          this.hint = null;
        }
        this._emit("kicked", { code: m.code, reason: m.reason, reconnect: m.reconnect !== false });
        break;
      case "pong":
        break;
      default:
        break; // a type from a newer server: ignored
    }
  }

  async _refresh() {
    if (!this.options.token) return;
    try {
      const token = await this.options.token();
      this._send({ type: "refresh", token });
    } catch (e) {
      this._emit("error", { reason: "token provider failed: " + e });
    }
  }

  // Send a pub or send with a fresh ref; the Promise settles on its ack or error,
  // the close, or the timeout. It carries a no-op catch, so a caller that ignores
  // it gets no unhandled-rejection report (one that awaits it still sees the error).
  _request(m, room, options) {
    options = options || {};
    let idempotencyKey = options.idempotencyKey;
    if (idempotencyKey === true) idempotencyKey = randomKey();
    if (idempotencyKey === false || idempotencyKey === null) idempotencyKey = undefined;
    if (idempotencyKey !== undefined) m.idempotency_key = idempotencyKey;
    const ref = this.nextRef++;
    m.ref = ref;
    const p = new Promise((resolve, reject) => {
      if (!this._send(m)) {
        reject(new RingwayError("not_connected", "not connected", { room, idempotencyKey }));
        return;
      }
      const timeout = options.timeout ?? this.options.ackTimeout;
      const timer = setTimeout(() => {
        if (this.pending.delete(ref)) {
          reject(new RingwayError("timeout", `no answer within ${timeout} ms`, { room, idempotencyKey }));
        }
      }, timeout);
      this.pending.set(ref, { resolve, reject, timer, room, idempotencyKey });
    });
    p.catch(() => {});
    return p;
  }

  _takePending(ref) {
    if (ref === undefined || ref === null) return null;
    const p = this.pending.get(ref);
    if (!p) return null;
    this.pending.delete(ref);
    clearTimeout(p.timer);
    return p;
  }

  _failPending(code, reason) {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new RingwayError(code, reason, { room: p.room, idempotencyKey: p.idempotencyKey }));
    }
  }

  _sub(room, r) {
    const m = { type: "sub", room };
    if (r.epoch !== null) m.since = { epoch: r.epoch, seq: r.seq };
    this._send(m);
  }

  _send(m) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  // Browsers answer the server's WebSocket pings without telling the page, so the
  // watchdog uses application pings: quiet for one heartbeat -> ping; quiet for two
  // -> the socket is dead, reconnect.
  _startWatchdog() {
    this._stopWatchdog();
    this.lastHeard = Date.now();
    const every = Math.max(250, this.heartbeat / 4);
    this.watchdog = setInterval(() => {
      const quiet = Date.now() - this.lastHeard;
      if (quiet > 2 * this.heartbeat) {
        this._emit("error", { reason: `no traffic for ${quiet} ms: reconnecting` });
        const ws = this.ws;
        if (ws) {
          ws.close(4000, "heartbeat timeout");
          this._onClose(ws, { code: 4000, reason: "heartbeat timeout" });
        }
      } else if (quiet > this.heartbeat) {
        this._send({ type: "ping" });
      }
    }, every);
  }

  _stopWatchdog() {
    clearInterval(this.watchdog);
    this.watchdog = null;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
