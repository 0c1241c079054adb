// Type declarations for push-client.js (the guide's websocketService).

export interface WebSocketConfig {
  /** e.g. "ws://localhost:8000/ws/task"; defaults to this page's host, path /ws/task. */
  url?: string;
  /** Topics subscribed on every (re)connect. */
  topics?: string[];
  /** First reconnect delay, ms (3000). Later delays: full jitter up to min(maxReconnectInterval, interval * 2^n). */
  reconnectInterval?: number;
  /** Attempts before giving up (5); Infinity for never. */
  maxReconnectAttempts?: number;
  /** ms between pings (30000). */
  pingInterval?: number;
  /** Cap of the reconnect delay, ms (30000). */
  maxReconnectInterval?: number;
  /** ms to wait for a pong before the connection is declared dead (10000). */
  pongTimeout?: number;
  /** Default timeout of request(), ms (10000). */
  requestTimeout?: number;
  /** Source of randomness for the jitter (Math.random). */
  random?: () => number;
  /** A JWT sent as the `token` query parameter. */
  token?: string;
  /** Called before every (re)connect for a fresh JWT; on close 4001 (expired) the client reconnects at once. */
  getToken?: () => string | Promise<string>;
  /**
   * The transports to use, in order of preference (["websocket", "sse", "http_stream"]): an attempt
   * starts with the one that last worked; one that fails before the edge's first frame hands over at
   * once to the next. "sse": GET /sse (EventSource), "http_stream": GET /stream (fetch, JSON lines);
   * both send the client's frames by POST /emulation. Same API, events, acks and recovery on each.
   */
  transports?: Transport[];
  /**
   * ms to wait for the edge's first frame (`connected`) before trying the next transport (10000: longer
   * than a connect that recovers topics may take at the edge, twice EDGE_SUBSCRIBE_CONFIRM_TIMEOUT).
   */
  connectTimeout?: number;
  /**
   * The token of a topic that needs a subscription token (a JWT with `sub` and `topic`, signed by your
   * backend); null/undefined: the topic needs none. Asked on every (re)subscribe, and when the edge says
   * the topic's token runs out (`refresh_required` with `topic`).
   */
  getSubscriptionToken?: (topic: string) => string | null | undefined | Promise<string | null | undefined>;
  /**
   * With getToken: the in-band refresh happens at a random point between these fractions of the
   * token's time left ([0.6, 0.85]), so clients with tokens from the same minute do not refresh together.
   */
  refreshWindow?: [number, number];
  /** Refresh the token in band by itself (true); false: only on close 4001, by reconnecting with getToken's token. */
  autoRefresh?: boolean;
}

/**
 * The configuration in effect: every default filled in, `url` too (this page's host when not given);
 * `token`, `getToken` and `getSubscriptionToken` stay undefined unless given.
 */
export type ResolvedConfig = Required<Omit<WebSocketConfig, "token" | "getToken" | "getSubscriptionToken">> &
  Pick<WebSocketConfig, "token" | "getToken" | "getSubscriptionToken">;

/** Frames `send()` keeps while offline (1000); past it the oldest is dropped, with an "$error". */
export declare const MAX_OUTBOX: number;

/** When to refresh a token with `remainingMs` left (the jitter of the in-band refresh). */
export declare function refreshDelay(remainingMs: number, random?: () => number, window?: [number, number]): number;

export type Transport = "websocket" | "sse" | "http_stream";
/** Every transport, in the default order. */
export declare const TRANSPORTS: Transport[];
/** The URL of a transport for a WebSocket URL: ws://host/ws/task -> http://host/sse/task. */
export declare function transportUrl(wsUrl: string, transport: Transport): string;

/** A session over an HTTP stream with a WebSocket's face (what the service uses for "sse" and "http_stream"). */
export declare class HttpStreamSocket {
  constructor(url: string, kind: "sse" | "http_stream", postUrl: string);
  readonly readyState: number;
  /** The edge's session id (from `connected`), named by every POST /emulation. */
  readonly session: string | null;
  onopen: (() => void) | null;
  onmessage: ((event: { data: string }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(text: string): void;
  close(code?: number, reason?: string): void;
}

/** The guide's envelope. */
export interface Envelope<T = unknown> {
  type: string;
  id: string;
  timestamp: number;
  data?: T;
  topic?: string;
  /** The message's position in its topic's history, when the topic keeps one. */
  offset?: number;
  epoch?: string;
  error?: { code: string; message: string; details?: string };
  /** Only on batch frames, which the client unpacks before dispatching. */
  messages?: Envelope[];
}

export type OutgoingMessage = { type: string; id?: string; timestamp?: number; data?: unknown; topic?: string };
export type Handler<T = any> = (data: T, message: Envelope<T>) => void;

/** Close codes after which the client does not reconnect by itself. */
export declare const TERMINAL_CLOSE_CODES: Set<number>;
/** The close code of an expired token (4001). */
export declare const TOKEN_EXPIRED: number;

/** An error frame as a rejection of request(). */
export declare class ProtocolError extends Error {
  readonly code: string;
  readonly frame: Envelope;
}

/** A client in a topic's presence. */
export interface PresenceClient {
  client_id: string;
  /** The token's `sub`; null for an anonymous connection. */
  user: string | null;
  /** When it joined the topic (ms since the epoch). */
  joined: number;
  /** The token's `info` claim. */
  info?: Record<string, unknown>;
}

/** `presence_summary`: instead of join/leave events while a topic churns (per second, per edge). */
export interface PresenceSummary {
  joins: number;
  leaves: number;
  /** Start of the counted interval (ms since the epoch). */
  since: number;
}

export declare class WebSocketService {
  constructor(config?: WebSocketConfig);
  readonly config: ResolvedConfig;
  /** True from the edge's `connected` frame (not the transport's open: the edge may still refuse) until the close. */
  readonly connected: boolean;
  /** The id the edge gave this connection (or the client_id query parameter). */
  readonly clientId: string | null;
  readonly topics: Set<string>;
  /** Topics whose join/leave events were asked for (asked again on every reconnect). */
  readonly joinLeave: Set<string>;
  /** The last history position seen per topic; sent on resubscribe to recover missed messages. */
  readonly positions: Map<string, { offset: number; epoch: string }>;
  readonly reconnectAttempts: number;
  /** The transport in use (or last used); null before the first connection. */
  readonly transport: Transport | null;
  connect(): void;
  /** Close for good: pending requests are rejected, and what `send()` queued offline is dropped. */
  disconnect(): void;
  /**
   * Returns the message id (filled in when absent, as is the timestamp). Offline, the frame waits for the
   * next connection (at most MAX_OUTBOX frames: past it the oldest is dropped, with an "$error").
   */
  send(message: OutgoingMessage): string;
  /**
   * Resolves with the ack's data (or the pong); rejects with ProtocolError on an error frame, or on timeout,
   * or when the connection (or an attempt, while offline) closes. A request rejected before it was sent is
   * never sent.
   */
  request<T = any>(message: OutgoingMessage, options?: { timeout?: number }): Promise<T>;
  /**
   * `joinLeave`: also deliver the topics' "join" / "leave" events (each topic needs a presence+joinleave rule).
   * Offline: resolves at once with `queued: true` (the next connection subscribes them; a topic the edge
   * refuses then is dropped, with "$subscribe_failed"). Refused (ProtocolError): the topics this call added
   * are forgotten. Subscribes and unsubscribes reach the edge in call order.
   */
  subscribe(topics: string | string[], options?: { joinLeave?: boolean }):
    Promise<{ type: "subscribe"; topics: string[]; join_leave?: true; queued?: boolean }>;
  /** Who is subscribed to `topic` (those allowed to subscribe may ask); rejects with ProtocolError PRESENCE_DISABLED, FORBIDDEN. */
  presence(topic: string): Promise<PresenceClient[]>;
  presenceStats(topic: string): Promise<{ clients: number; users: number }>;
  unsubscribe(topics: string | string[]): Promise<{ type: "unsubscribe"; topics: string[]; queued?: boolean }>;
  /**
   * By topic ("task:progress") or type ("notification"). Lifecycle events use keys starting with "$":
   * "$connecting", "$closed" {code, reason}, "$reconnect" {attempt, delay}, "$reconnect_failed", "$error",
   * "$recovered" {topic, offset, epoch}, "$recovery_failed" {topic, reason, offset, epoch} (re-sync that topic),
   * "$transport" {transport, previous} (a connection on another transport than before),
   * "$fallback" {from, to} (a transport failed before the edge's first frame; the next one is tried at once),
   * "$refreshed" {type: "refresh", expires_at, topic?} (a token replaced in band),
   * "$unsubscribed" {topic, code, reason} (a subscription token ran out; it is subscribed again, from its
   * position, when getSubscriptionToken gives a new one),
   * "$subscribe_failed" {topic, code, message} (a topic the edge refused when this client subscribed it
   * again, after a reconnect or a subscription token's expiry: forbidden, invalid, too many topics, a
   * hook's refusal; it is dropped from `topics`. RATE_LIMITED is not final: that topic is asked again),
   * "$server_subscribe" / "$server_unsubscribe" {topics} (the backend changed this connection's topics).
   * "join" / "leave" (data: PresenceClient, message.topic: the topic) and "presence_summary" go to type
   * handlers only, never to the topic's. Returns a function that removes the handler.
   */
  on(type: "join" | "leave", handler: Handler<PresenceClient>): () => void;
  on(type: "presence_summary", handler: Handler<PresenceSummary>): () => void;
  on<T = any>(topicOrType: string, handler: Handler<T>): () => void;
  off(topicOrType: string, handler?: Handler): void;
  onConnectionChange(cb: (connected: boolean) => void): () => void;
  reconnectDelay(attempt: number): number;
  /** When the connection's token expires (Unix seconds, the edge's clock); null without expiry. */
  readonly expiresAt: number | null;
  /**
   * Replace the token in band, without reconnecting (getToken's token, or `token`). The client does this
   * by itself ahead of expiry when getToken is set. Rejects with ProtocolError (UNAUTHORIZED, TOKEN_EXPIRED).
   */
  refresh(token?: string): Promise<{ type: "refresh"; expires_at: number }>;
  /** Publish where the edge's topic rules (and its Publish hook) allow; `type` defaults to "message". */
  publish(topic: string, data: unknown, options?: { type?: string }): Promise<{ type: "publish"; topic: string; message_id: string }>;
  /** A call answered by the application's backend (the edge's RPC hook): resolves with its data. */
  rpc<T = any>(method: string, data?: unknown): Promise<T>;
}

export declare function getWsService(config?: WebSocketConfig): WebSocketService;
export default WebSocketService;
