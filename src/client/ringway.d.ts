// Type declarations for ringway.js (served at /client.d.ts).

export declare const State: Readonly<{
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;
export type ConnectionState = (typeof State)[keyof typeof State];

/** Full-jitter exponential backoff: random(0, min(cap, base * 2^attempt)). */
export declare function backoff(attempt: number, base: number, cap: number, random?: () => number): number;

/** A random idempotency key: 32 hex digits. */
export declare function randomKey(): string;

/**
 * A refused or unanswered `publish()` or `send()`. `code` is the server's error code
 * (`forbidden`, `bad_field`, `unavailable`, ...) or one of the client's:
 * `not_connected` (nothing was sent), `disconnected` (the socket closed before the
 * ack: it may or may not have been stamped), `timeout` (no answer in time: likewise).
 * Retry those with the same `idempotencyKey` to have the message stamped once.
 */
export declare class RingwayError extends Error {
  readonly code: string;
  readonly reason: string;
  /** The room it was about (`user:<user>` for a send). */
  readonly room?: string;
  /** The request's idempotency key (the generated one for `idempotencyKey: true`). */
  readonly idempotencyKey?: string;
}

/** A room's position: the last message delivered. */
export interface Cursor {
  epoch: string;
  seq: number;
}

/** The room's owner stamped a publish or send. */
export interface Ack {
  room: string;
  epoch: string;
  seq: number;
  /** Its idempotency key had been seen: `seq` is the first publish's; not delivered again. */
  duplicate: boolean;
}

export interface PublishOptions {
  /** Conflation key (under the `conflate` policy a slow subscriber keeps the newest per key). */
  key?: string;
  /** 1-128 bytes, or `true` for a random key; a repeat with the same key is stamped once. */
  idempotencyKey?: string | true;
  /** ms to wait for the ack (default: the `ackTimeout` option). */
  timeout?: number;
}

export interface SendOptions {
  idempotencyKey?: string | true;
  timeout?: number;
}

export interface SubscribeOptions {
  /** Resume after this cursor (saved from `cursor(room)`): missed messages are replayed, or `resync` fires. */
  since?: Cursor | null;
}

export interface RingwayOptions {
  /** Called on every connect and on `refresh_needed`; returns a signed token. */
  token?: () => string | Promise<string>;
  /** Backoff base in ms (default 250). */
  backoffBase?: number;
  /** Backoff cap in ms (default 15000). */
  backoffCap?: number;
  /** Watchdog interval in ms (default: the server's heartbeat from `welcome`). */
  heartbeat?: number;
  /** Connect in the constructor (default true). */
  connect?: boolean;
  /** ms a publish or send waits for its ack before rejecting with `timeout` (default 10000). */
  ackTimeout?: number;
}

export interface Message<T = unknown> {
  type: "msg";
  room: string;
  seq: number;
  /** The publisher's user id, set by the node (absent for anonymous publishers). */
  from?: string;
  key?: string;
  data: T;
}

export interface Roster {
  type: "presence";
  room: string;
  users: { user: string; connections: number }[];
  connections: number;
}

export interface RingwayEvents {
  state: CustomEvent<{ state: ConnectionState }>;
  welcome: CustomEvent<{ conn: string; node: string; user?: string; heartbeat: number }>;
  subscribed: CustomEvent<{ room: string; epoch: string; seq: number; recovered: boolean }>;
  /** The room's history could not be replayed: reload its state from your app. */
  resync: CustomEvent<{ room: string; epoch: string; seq: number; previous: { epoch: string; seq: number } }>;
  /** Messages were dropped for this connection (slow-consumer policy). */
  gap: CustomEvent<{ room: string; from: number; to: number }>;
  message: CustomEvent<Message>;
  join: CustomEvent<{ room: string; user: string }>;
  leave: CustomEvent<{ room: string; user: string }>;
  refreshed: CustomEvent<{ exp: number }>;
  draining: CustomEvent<{ after_ms: number }>;
  /** Every close of the socket. */
  disconnect: CustomEvent<{ code: number; reason: string }>;
  /** The app closed this connection (POST /v1/disconnect); with `reconnect: false` the client stays closed. */
  kicked: CustomEvent<{ code: number; reason: string; reconnect: boolean }>;
  retry: CustomEvent<{ attempt: number; delay: number }>;
  error: CustomEvent<{ code?: string; reason: string; room?: string; ref?: unknown }>;
}

export declare class Ringway extends EventTarget {
  constructor(url: string, options?: RingwayOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** The user from the token (null when anonymous). */
  readonly user: string | null;
  /** The node this connection is on. */
  readonly node: string | null;
  connect(): void;
  close(): void;
  /** Subscribe; returns a function that removes the handler. */
  subscribe<T = unknown>(
    room: string,
    handler?: (data: T, msg: Message<T>) => void,
    options?: SubscribeOptions,
  ): () => void;
  unsubscribe(room: string): void;
  /** Resolves once the room's owner stamped it; rejects with a RingwayError. (A string is the conflation key.) */
  publish(room: string, data: unknown, options?: PublishOptions | string): Promise<Ack>;
  /** A direct message to every connection of `user`; the ack's room is `user:<user>`. */
  send(user: string, data: unknown, options?: SendOptions): Promise<Ack>;
  presence(room: string, timeoutMs?: number): Promise<Roster>;
  cursors(): Record<string, { epoch: string | null; seq: number }>;
  /** The room's last delivered position, to save for `subscribe(room, h, { since })`; null if unknown. */
  cursor(room: string): Cursor | null;
  addEventListener<K extends keyof RingwayEvents>(
    type: K,
    listener: (ev: RingwayEvents[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}
