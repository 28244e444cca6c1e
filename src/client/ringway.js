// ringway.js: the browser client for ringway (protocol ringway.v1).
// Dependency-free ES module, served by every node at /client.js.
//
//   import { Ringway } from "/client.js";
//   const rw = new Ringway("wss://rt.example.com/ws", { token: () => fetchToken() });
//   rw.addEventListener("state", (e) => console.log(e.detail.state));
//   rw.addEventListener("resync", (e) => reloadRoom(e.detail.room));
//   const off = rw.subscribe("chat:42", (data, msg) => show(data, msg.seq));
//   rw.publish("chat:42", { text: "hi" });
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

export class Ringway extends EventTarget {
  /**
   * @param {string} url  ws:// or wss:// URL of a node's client endpoint
   * @param {object} [options]
   * @param {() => (string|Promise<string>)} [options.token]  token provider
   * @param {number} [options.backoffBase=250]  ms
   * @param {number} [options.backoffCap=15000]  ms
   * @param {number} [options.heartbeat]  ms; default: the server's, from `welcome`
   * @param {boolean} [options.connect=true]  connect at once
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { backoffBase: 250, backoffCap: 15000, connect: true, ...options };
    this.state = State.CLOSED;
    this.user = null;
    this.node = null;
    this.attempt = 0;
    this.rooms = new Map(); // room -> { handlers: Set, epoch, seq }
    this.waiting = new Map(); // room -> [resolve] for presence()
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

  /** Close for good; no reconnect. */
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
    this._setState(State.CLOSED);
  }

  /**
   * Subscribe; `handler(data, msg)` gets every message of the room, in order.
   * Returns a function that removes the handler (and leaves the room with the last).
   */
  subscribe(room, handler) {
    let r = this.rooms.get(room);
    if (!r) {
      r = { handlers: new Set(), epoch: null, seq: 0 };
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

  /** Publish `data` (any JSON value) to a room. */
  publish(room, data, key) {
    const m = { type: "pub", room, data };
    if (key !== undefined) m.key = key;
    return this._send(m);
  }

  /** Send `data` to every connection of `user`, on any node. */
  send(user, data) {
    return this._send({ type: "send", user, data });
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
      case "error":
        this._emit("error", m);
        break;
      case "pong":
        break;
      default:
        break;
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
