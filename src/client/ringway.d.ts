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
}

export interface Message<T = unknown> {
  type: "msg";
  room: string;
  seq: number;
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
  disconnect: CustomEvent<{ code: number; reason: string }>;
  retry: CustomEvent<{ attempt: number; delay: number }>;
  error: CustomEvent<{ code?: string; reason: string }>;
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
  subscribe<T = unknown>(room: string, handler?: (data: T, msg: Message<T>) => void): () => void;
  unsubscribe(room: string): void;
  publish(room: string, data: unknown, key?: string): boolean;
  send(user: string, data: unknown): boolean;
  presence(room: string, timeoutMs?: number): Promise<Roster>;
  cursors(): Record<string, { epoch: string | null; seq: number }>;
  addEventListener<K extends keyof RingwayEvents>(
    type: K,
    listener: (ev: RingwayEvents[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}
