// The browser client of the guide's WebSocket protocol (websocketService), as an ES module.
//
//   import { WebSocketService } from "/static/push-client.js";
//   const ws = new WebSocketService({ url: "ws://localhost:8000/ws/task", topics: ["task:progress"] });
//   ws.on("task:progress", (data, message) => { ... });   // by topic
//   ws.on("notification", (data) => { ... });              // or by type
//   ws.onConnectionChange((connected) => { ... });
//   ws.connect();
//   await ws.request({ type: "task_start", data: { params: { symbols: ["BTCUSDT"] } } });
//
// Beyond the guide: exponential backoff with full jitter after the first interval (capped), an
// immediate retry on the browser's `online` event, no reconnect after disconnect() or a terminal
// close code, resubscription of every topic after a reconnect, acknowledgement Promises keyed by
// message id, a missing-pong timeout that declares the connection dead, and recovery: the last
// position `{offset, epoch}` seen per topic is sent on resubscribe, so the edge delivers exactly what
// was missed, or says it cannot (`$recovery_failed`: re-sync that topic's state).
//
// A connection counts as made when the edge's `connected` frame arrives, not when the transport
// opens: the edge accepts the upgrade before it checks the token and its limits, and may still close
// (4001, 4029, 4503, 1011, 1013). Only then are the attempts reset, the topics resubscribed and what
// was sent meanwhile (`send()` while offline, at most MAX_OUTBOX frames) flushed. A refused
// resubscribe is retried topic by topic, and a topic the edge refuses is dropped (`$subscribe_failed`).
//
// Transports (`transports`, default ["websocket", "sse", "http_stream"]): the same session over a
// WebSocket, Server-Sent Events (GET /sse) or HTTP-streaming (GET /stream, newline-delimited JSON),
// the client's frames then going by POST /emulation (to any edge). Each attempt starts with the
// transport that last worked; one that fails before the edge's first frame (the upgrade refused, or
// no `connected` within `connectTimeout`) hands over at once to the next, and only a whole round of
// failures counts as a reconnect attempt. `transport` says which one is in use (`$transport` event).
//
// Tokens (issue 19): with `getToken`, the client refreshes its token in band, without reconnecting,
// ahead of its expiry (`connected.data.expires_at`): at a random point between `refreshWindow[0]` and
// `[1]` of the time left (so a fleet whose tokens came in the same minute spreads its refreshes), and
// soon after the edge's `refresh_required` at the latest. `getSubscriptionToken(topic)` gives the
// token of a topic that needs one; it is asked on every (re)subscribe and when the edge says the
// topic's token runs out. `publish(topic, data)` and `rpc(method, data)` return Promises.

/** Close codes after which reconnecting as-is cannot help (see the README's table). */
export const TERMINAL_CLOSE_CODES = new Set([4003, 4010, 4400]); // = ws_edge/core/codes.py TERMINAL_CLOSE_CODES (tests/ws_edge/test_codes.py)
/** The token expired: get a fresh one (config.getToken) and reconnect at once. */
export const TOKEN_EXPIRED = 4001;
/** Positions longer than this (as JSON) stay out of the URL (the edge refuses URLs over 8000 bytes). */
const MAX_URL_POSITIONS = 2000;
/** The transports, in the default order of preference. */
export const TRANSPORTS = ["websocket", "sse", "http_stream"];
// Presence events carry their topic but are not the topic's messages: dispatched by type only.
const PRESENCE_EVENTS = new Set(["join", "leave", "presence_summary"]);
const STREAM_PATHS = { sse: "/sse", http_stream: "/stream" };
const MAX_POST_FRAMES = 100; // = ws_edge/core/streams.py MAX_EMULATION_FRAMES
/** Frames kept while offline; past it the oldest goes (an app offline for long must not grow without end). */
export const MAX_OUTBOX = 1000;
/** A topic whose resubscribe was RATE_LIMITED is asked again after 1-2 s (the edge's limit is per second). */
const RESUBSCRIBE_RETRY_MS = 1000;
const OPEN = 1;
const CLOSED = 3;

const DEFAULTS = {
  url: undefined,
  topics: [],
  reconnectInterval: 3000,
  maxReconnectAttempts: 5,
  pingInterval: 30000,
  maxReconnectInterval: 30000,
  pongTimeout: 10000,
  requestTimeout: 10000,
  random: Math.random,
  token: undefined,
  getToken: undefined,
  transports: TRANSPORTS,
  // Longer than the edge's slowest `connected`: a connect that recovers topics waits up to twice
  // EDGE_SUBSCRIBE_CONFIRM_TIMEOUT (2 x 3 s) for the push service; a shorter wait would give up on
  // a working transport and try the next one.
  connectTimeout: 10000,
  getSubscriptionToken: undefined,
  autoRefresh: true,
  refreshWindow: [0.6, 0.85],
};

/**
 * When to refresh a token that has `remainingMs` left: at a uniformly random point between
 * `window[0]` and `window[1]` of it (0.6..0.85 by default). Pure, so a bench can run it (bench/refresh_spread.py).
 */
export function refreshDelay(remainingMs, random = Math.random, window = DEFAULTS.refreshWindow) {
  const [from, to] = window;
  return Math.max(0, Math.round(Math.max(0, remainingMs) * (from + (to - from) * random())));
}

function defaultUrl() {
  if (typeof location === "undefined") return "ws://localhost:8000/ws/task";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/task`;
}

/** An error frame, as a rejection: `code` is the protocol's stable error code. */
export class ProtocolError extends Error {
  constructor(code, message, frame) {
    super(`${code}: ${message}`);
    this.name = "ProtocolError";
    this.code = code;
    this.frame = frame;
  }
}

/**
 * One session over an HTTP stream, with a WebSocket's face (readyState, send, close, onopen,
 * onmessage, onclose), so the service runs on it unchanged. Down: an EventSource (`sse`) or a fetch
 * reading JSON lines (`http_stream`); open once `connected` (which names the session) arrives, closed
 * by the edge's `close` frame with its code. Up: POST /emulation, one request in flight at a time so
 * frames keep their order; those sent meanwhile go together in the next.
 */
export class HttpStreamSocket {
  constructor(url, kind, postUrl) {
    this.url = url;
    this.kind = kind;
    this.readyState = 0;
    this.session = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._postUrl = postUrl;
    this._queue = [];
    this._posting = false;
    this._abort = new AbortController();
    if (kind === "sse") {
      const source = new EventSource(url);
      this._source = source;
      source.onmessage = (event) => this._frame(event.data);
      // The EventSource would reconnect by itself; the service reconnects instead (positions, topics).
      source.onerror = () => this._ended(1006, "stream failed");
    } else {
      this._read(url);
    }
  }

  async _read(url) {
    try {
      const response = await fetch(url, { signal: this._abort.signal, cache: "no-store" });
      if (!response.ok || !response.body) return this._ended(1006, `HTTP ${response.status}`);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 1);
          if (line) this._frame(line); // an empty line is the heartbeat
          if (this.readyState === CLOSED) return;
        }
      }
      this._ended(1006, "stream ended");
    } catch (err) {
      this._ended(1006, String(err));
    }
  }

  _frame(text) {
    if (this.readyState === CLOSED) return;
    if (text.startsWith('{"type":"close"')) {
      const frame = JSON.parse(text);
      this._ended(frame.data.code, frame.data.reason);
      return;
    }
    if (this.readyState === 0 && text.startsWith('{"type":"connected"')) {
      this.session = JSON.parse(text).data.session;
      this.readyState = OPEN;
      if (this.onopen) this.onopen();
    }
    if (this.onmessage) this.onmessage({ data: text });
  }

  send(text) {
    if (this.readyState !== OPEN) throw new Error("HttpStreamSocket is not open");
    this._queue.push(text);
    if (!this._posting) this._flush();
  }

  async _flush() {
    this._posting = true;
    while (this._queue.length && this.readyState === OPEN) {
      const frames = this._queue.splice(0, MAX_POST_FRAMES);
      let status = 0;
      try {
        const response = await fetch(this._postUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ session: this.session, frames }),
        });
        status = response.status;
      } catch (err) {
        status = 0; // the network: retried below, until a pong timeout gives up on the session
      }
      if (status === 202) continue;
      if (status === 0 || status === 429 || status === 503) {
        this._queue.unshift(...frames);
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      // 404: the session is over (its stream ended); 400/403/413: this session cannot go on.
      this._ended(1006, `POST /emulation answered ${status}`);
    }
    this._posting = false;
  }

  close(code = 1000, reason = "") {
    this._ended(code, reason);
  }

  _ended(code, reason) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    if (this._source) this._source.close();
    this._abort.abort();
    this._queue = [];
    if (this.onclose) this.onclose({ code, reason });
  }
}

/** The URL of `transport` for a WebSocket URL (ws://host/ws/task -> http://host/sse/task). */
export function transportUrl(wsUrl, transport) {
  if (transport === "websocket") return wsUrl;
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = STREAM_PATHS[transport] + url.pathname.replace(/^\/ws/, "");
  return url.toString();
}

export class WebSocketService {
  constructor(config = {}) {
    this.config = { ...DEFAULTS, ...config };
    if (!this.config.url) this.config.url = defaultUrl();
    const unknown = this.config.transports.filter((t) => !TRANSPORTS.includes(t));
    if (unknown.length || !this.config.transports.length) {
      throw new Error(`transports must be a non-empty list of ${TRANSPORTS.join(", ")}; got ${this.config.transports}`);
    }
    /** The transport in use (or last used): "websocket", "sse" or "http_stream". */
    this.transport = null;
    this._transportIndex = 0; // the one tried next
    this._roundStart = 0; // where this round of attempts began (the one that last worked)
    this.ws = null;
    this.connected = false;
    this.clientId = null;
    this.topics = new Set(this.config.topics);
    /** Topics whose join/leave events this client asked for (asked again on every reconnect). */
    this.joinLeave = new Set();
    /** topic -> {offset, epoch}: the last position seen, sent on resubscribe to recover what was missed. */
    this.positions = new Map();
    this.reconnectAttempts = 0;
    this._handlers = new Map(); // topic or type -> Set of handlers
    this._connectionHandlers = new Set();
    this._pending = new Map(); // message id -> { resolve, reject, timer }
    this._outbox = []; // {id, text} of frames sent while not connected, flushed at `connected`
    // Subscribes and unsubscribes wait here for the one before to be sent: a subscribe's tokens may
    // take a while, and an unsubscribe that overtook it would leave the edge subscribed.
    this._order = Promise.resolve();
    this._heard = false; // a frame from the edge on this attempt
    this._counter = 0;
    this._stopped = true;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._refreshTimer = null;
    /** When the connection's token expires (Unix seconds, the edge's clock), from `connected` or a refresh. */
    this.expiresAt = null;
    this._onOnline = () => {
      if (!this._stopped && !this.connected) this._reconnectNow();
    };
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
  }

  /** Open the connection (and keep it open, reconnecting, until disconnect()). */
  connect() {
    this._stopped = false;
    this.reconnectAttempts = 0;
    this._refreshing = false;
    clearTimeout(this._reconnectTimer);
    if (!this.ws || this.ws.readyState > OPEN) this._open();
  }

  /** Close for good: no reconnect; pending requests are rejected and what waited to be sent is dropped. */
  disconnect() {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._connectTimer);
    this._stopHeartbeat();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, "client disconnect");
      this._setConnected(false);
    }
    this._rejectPending(new Error("disconnected"));
    this._outbox = [];
  }

  /** Send a message; `id` and `timestamp` are filled in when absent. Returns the id. */
  send(message) {
    const frame = { ...message };
    if (frame.id === undefined || frame.id === null) frame.id = `${frame.type}_${Date.now()}_${++this._counter}`;
    if (frame.timestamp === undefined) frame.timestamp = Date.now();
    const text = JSON.stringify(frame);
    if (this.connected && this.ws) this.ws.send(text);
    else this._queue(frame.id, text);
    return frame.id;
  }

  /**
   * Send and await the answer: resolves with an ack's `data` (or the pong), rejects on an error frame or timeout.
   * A request rejected before it went out (offline) is never sent: the app was told it failed.
   */
  request(message, { timeout = this.config.requestTimeout } = {}) {
    return new Promise((resolve, reject) => {
      const id = this.send(message);
      const timer = setTimeout(() => {
        this._pending.delete(id);
        this._unqueue(id);
        reject(new Error(`request ${id} timed out after ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  /**
   * Subscribe to topics; kept across reconnects. Resolves when the edge acknowledges; offline, at once
   * with `queued: true` (the next connection subscribes them). Refused by the edge (ProtocolError):
   * the topics this call added are forgotten, so that they do not spoil the next resubscribe.
   * `joinLeave`: also receive the topics' `join` / `leave` events (or `presence_summary` under churn).
   */
  subscribe(topics, { joinLeave = false } = {}) {
    const list = [].concat(topics);
    const added = list.filter((t) => !this.topics.has(t));
    const marked = joinLeave ? list.filter((t) => !this.joinLeave.has(t)) : [];
    added.forEach((t) => this.topics.add(t));
    marked.forEach((t) => this.joinLeave.add(t));
    const queued = { type: "subscribe", topics: list, queued: true };
    if (!this.connected) return Promise.resolve(queued);
    const data = joinLeave ? { topics: list, join_leave: true } : { topics: list };
    return this._inOrder(() => this._subscribeFrame(data).then((frame) => ({ type: "subscribe", data: frame })), queued)
      .catch((err) => {
        if (err instanceof ProtocolError) this._forget(added, marked);
        throw err;
      });
  }

  /** Who is subscribed to a topic with presence: [{client_id, user, joined, info?}], in join order. */
  presence(topic) {
    return this.request({ type: "presence", data: { topic } }).then((data) => data.clients);
  }

  /** How many clients and distinct users are subscribed to a topic with presence. */
  presenceStats(topic) {
    return this.request({ type: "presence_stats", data: { topic } }).then((d) => ({ clients: d.clients, users: d.users }));
  }

  /**
   * Replace the connection's token in band (getToken's, or `token`): no reconnect. Resolves with the
   * ack's data ({type: "refresh", expires_at}); the next refresh is scheduled from it.
   */
  async refresh(token) {
    const fresh = token !== undefined ? token : await this.config.getToken();
    const ack = await this.request({ type: "refresh", data: { token: fresh } }); // the ack schedules the next
    this._emit("$refreshed", ack);
    return ack;
  }

  /** Publish to a topic where the edge's rules allow it; resolves with {type, topic, message_id}. */
  publish(topic, data, { type } = {}) {
    const body = type === undefined ? { topic, data } : { topic, data, type };
    return this.request({ type: "publish", data: body });
  }

  /** A call answered by the application's backend (the edge's RPC hook); resolves with its data. */
  rpc(method, data) {
    return this.request({ type: "rpc", data: { method, data } }).then((ack) => ack.data);
  }

  unsubscribe(topics) {
    const list = [].concat(topics);
    list.forEach((t) => this._dropped(t));
    const queued = { type: "unsubscribe", topics: list, queued: true };
    if (!this.connected) return Promise.resolve(queued);
    return this._inOrder(() => ({ type: "unsubscribe", data: { topics: list } }), queued);
  }

  /** Listen by topic (`task:progress`) or by type (`notification`): handler(data, message). */
  on(topicOrType, handler) {
    if (!this._handlers.has(topicOrType)) this._handlers.set(topicOrType, new Set());
    this._handlers.get(topicOrType).add(handler);
    return () => this.off(topicOrType, handler);
  }

  off(topicOrType, handler) {
    const set = this._handlers.get(topicOrType);
    if (!set) return;
    if (handler) set.delete(handler);
    else set.clear();
    if (set.size === 0) this._handlers.delete(topicOrType);
  }

  /** cb(connected: boolean) on every change. Returns a function that removes cb. */
  onConnectionChange(cb) {
    this._connectionHandlers.add(cb);
    return () => this._connectionHandlers.delete(cb);
  }

  /** The delay before reconnect attempt `attempt` (0-based): the interval, then full jitter, capped. */
  reconnectDelay(attempt) {
    const { reconnectInterval, maxReconnectInterval, random } = this.config;
    if (attempt === 0) return reconnectInterval;
    const ceiling = Math.min(maxReconnectInterval, reconnectInterval * 2 ** attempt);
    return Math.round(random() * ceiling);
  }

  // --- internals ----------------------------------------------------------------------------

  async _urlWithToken() {
    let token = this.config.token;
    if (this.config.getToken) token = await this.config.getToken();
    const url = new URL(this.config.url, typeof location === "undefined" ? undefined : location.href);
    if (token) url.searchParams.set("token", token);
    // Where this client was on every topic: the URL's topics (`?topics=`, or /ws/task's) recover before
    // any live message goes out, so a reconnect can neither repeat nor reorder them. Kept short: the
    // `subscribe` sent on open carries the positions too.
    const since = JSON.stringify(Object.fromEntries(this.positions));
    if (this.positions.size && since.length <= MAX_URL_POSITIONS) url.searchParams.set("since", since);
    return url.toString();
  }

  _open() {
    this._emit("$connecting", { attempt: this.reconnectAttempts });
    this.ws = null;
    const opening = (this._opening = this._urlWithToken()
      .then((url) => {
        if (this._opening === opening && !this._stopped) this._connectTo(url);
      })
      .catch((err) => {
        // No token now (e.g. the server that issues it is down): a failed attempt, retried on schedule.
        // No transport was tried, so none is to blame: the next attempt uses the same one.
        this._emit("$error", err);
        if (this._opening === opening) this._closed(1006, "getToken failed");
      }));
  }

  _connectTo(url) {
    const transport = this.config.transports[this._transportIndex];
    const target = transportUrl(url, transport);
    const ws = transport === "websocket" ? new WebSocket(target)
      : new HttpStreamSocket(target, transport, new URL("/emulation", target).toString());
    this.ws = ws;
    this._heard = false; // any frame from the edge on this attempt
    clearTimeout(this._connectTimer);
    // An upgrade that a proxy swallows, or a stream it buffers: no `connected` in time, next transport.
    this._connectTimer = setTimeout(() => {
      if (this.ws !== ws || this._heard) return;
      ws.onclose = null;
      try {
        ws.close(4000, "no frame in time");
      } catch (err) {
        /* already closing */
      }
      this._closed(1006, `no frame within ${this.config.connectTimeout} ms over ${transport}`);
    }, this.config.connectTimeout);
    // No onopen: an open transport is not a connection yet (see _established).
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      if (!this._heard) {
        this._heard = true;
        clearTimeout(this._connectTimer);
        this._roundStart = this._transportIndex; // it works: later attempts start with it
        if (this.transport !== transport) {
          const previous = this.transport;
          this.transport = transport;
          this._emit("$transport", { transport, previous });
        }
      }
      this._receive(event.data);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this._closed(event.code, event.reason);
    };
    ws.onerror = () => {}; // onclose follows; nothing to add
  }

  /**
   * The edge's `connected`: the connection is made (auth and admission passed). Only now are the
   * attempts reset, the topics subscribed again and what waited sent: a socket the edge closes before
   * it would otherwise count as a success (a reconnect loop with no backoff) and swallow the outbox.
   */
  _established() {
    this.reconnectAttempts = 0;
    this._refreshing = false;
    this._setConnected(true);
    this._startHeartbeat();
    this._resubscribe();
    const outbox = this._outbox.splice(0);
    outbox.forEach(({ text }) => this.ws.send(text));
  }

  /**
   * Every topic again, with its position, token and join/leave: the join/leave topics in one subscribe,
   * the others in another (a separate join/leave request could reach the edge before the recovering
   * subscribe, which would then replay what was already delivered live).
   */
  _resubscribe() {
    const joinLeave = [...this.topics].filter((t) => this.joinLeave.has(t));
    const others = [...this.topics].filter((t) => !this.joinLeave.has(t));
    if (joinLeave.length) this._resubscribeTopics(joinLeave);
    if (others.length) this._resubscribeTopics(others);
  }

  /**
   * Topics again, on this connection, in one subscribe: on a new connection, or when a topic's
   * subscription token ran out. Those unsubscribed meanwhile are left out. Refused RATE_LIMITED: the
   * same again a little later (it only says "later"); refused otherwise (the edge refuses a subscribe
   * whole): one subscribe per topic, and a lone topic refused is dropped (`$subscribe_failed`).
   */
  _resubscribeTopics(topics) {
    const ws = this.ws;
    const build = () => {
      const held = topics.filter((t) => this.topics.has(t));
      return held.length ? this._subscribeFrame(this._resubscribeData(held)).then((data) => ({ type: "subscribe", data }))
        : null;
    };
    this._inOrder(build, null, ws)
      .then((ack) => this._recovered(ack && ack.recovery))
      .catch((err) => {
        // (A refusal on a connection since lost changes nothing: the next one subscribes them anyway.)
        if (!(err instanceof ProtocolError)) this._emit("$error", err);
        else if (this.ws !== ws) return;
        else if (err.code === "RATE_LIMITED") this._retryLater(topics, ws);
        else if (topics.length > 1) topics.forEach((t) => this._resubscribeTopics([t]));
        else this._subscribeFailed(topics[0], err);
      });
  }

  _retryLater(topics, ws) {
    setTimeout(() => {
      if (this.ws === ws && this.connected) this._resubscribeTopics(topics);
    }, RESUBSCRIBE_RETRY_MS * (1 + this.config.random()));
  }

  /** The edge will not have this topic (forbidden, invalid, too many, a hook's no): forgotten, and told. */
  _subscribeFailed(topic, err) {
    this._dropped(topic);
    this.positions.delete(topic);
    const error = (err.frame && err.frame.error) || {};
    this._emit("$subscribe_failed", { topic, code: err.code, message: error.message });
  }

  /** A subscribe's data for topics this client holds: their positions, and join_leave if they want it. */
  _resubscribeData(topics) {
    const data = { topics };
    const since = {};
    for (const topic of topics) if (this.positions.has(topic)) since[topic] = this.positions.get(topic);
    if (Object.keys(since).length) data.since = since;
    if (topics.every((t) => this.joinLeave.has(t))) data.join_leave = true;
    return data;
  }

  /** A refused subscribe() leaves no trace: only the topics and marks it added (not ones held before). */
  _forget(topics, marks) {
    topics.forEach((t) => this.topics.delete(t));
    marks.forEach((t) => this.joinLeave.delete(t));
  }

  /**
   * Subscribes and unsubscribes go on the wire in call order, whatever `build` (their tokens) takes.
   * `build()` gives the message (or null: nothing to send); offline by then, or on another connection
   * than `ws`, it is not sent (the next connection subscribes `this.topics`) and resolves with `queued`.
   */
  _inOrder(build, queued, ws = null) {
    const sent = this._order.then(build).then((message) => {
      if (!message) return { answer: null };
      if (!this.connected || (ws && this.ws !== ws)) return { answer: queued };
      return { answer: this.request(message) }; // (boxed: the next one waits for the send, not the ack)
    });
    this._order = sent.catch(() => {});
    return sent.then(({ answer }) => answer);
  }

  /** A subscribe's data with the subscription tokens of its topics that need one (getSubscriptionToken). */
  async _subscribeFrame(data) {
    const ask = this.config.getSubscriptionToken;
    if (!ask) return data;
    const tokens = {};
    for (const topic of data.topics) {
      const token = await ask(topic);
      if (token) tokens[topic] = token;
    }
    return Object.keys(tokens).length ? { ...data, tokens } : data;
  }

  /** The next in-band refresh: `expiresAt` (Unix s, the edge's clock) seen in a frame stamped `stampMs`. */
  _scheduleRefresh(expiresAt, stampMs) {
    clearTimeout(this._refreshTimer);
    if (!expiresAt || !this.config.getToken || !this.config.autoRefresh) return;
    const delay = refreshDelay(expiresAt * 1000 - stampMs, this.config.random, this.config.refreshWindow);
    this._refreshTimer = setTimeout(() => this._refreshNow(), delay);
  }

  _refreshNow() {
    if (!this.connected) return;
    this.refresh().catch((err) => this._emit("$error", err)); // else 4001 at exp: reconnect with a fresh token
  }

  /** The edge says a token runs out soon: refresh within a random part of half the time left. */
  _refreshRequired(message) {
    const { topic, expires_at: expiresAt } = message.data || {};
    const soon = Math.round(this.config.random() * Math.max(0, expiresAt * 1000 - message.timestamp) / 2);
    if (!topic) {
      if (!this.config.getToken || !this.config.autoRefresh) return;
      clearTimeout(this._refreshTimer);
      this._refreshTimer = setTimeout(() => this._refreshNow(), soon);
      return;
    }
    const ask = this.config.getSubscriptionToken;
    if (!ask) return;
    setTimeout(() => {
      if (!this.connected || !this.topics.has(topic)) return; // a new connection subscribes with a new token
      Promise.resolve(ask(topic))
        .then((token) => this.request({ type: "refresh", data: { topic, token } }))
        .then((ack) => this._emit("$refreshed", ack))
        .catch((err) => this._emit("$error", err));
    }, soon);
  }

  /** The attempt or connection is over (no socket: no transport was even tried, e.g. getToken failed). */
  _closed(code, reason) {
    const tried = this.ws !== null;
    this.ws = null;
    clearTimeout(this._connectTimer);
    clearTimeout(this._refreshTimer);
    this._stopHeartbeat();
    this._setConnected(false);
    this._rejectPending(new Error(`connection closed (${code})`));
    this._emit("$closed", { code, reason });
    if (this._stopped) return;
    // Nothing from the edge on this transport (and no close code of the edge's): the next one, at once,
    // until a whole round has failed; then the usual schedule, from the transport that last worked.
    const transports = this.config.transports;
    if (tried && !this._heard && code < 4000 && code !== 1001 && code !== 1013) {
      this._transportIndex = (this._transportIndex + 1) % transports.length;
      if (this._transportIndex !== this._roundStart) {
        this._emit("$fallback", { from: transports[(this._transportIndex + transports.length - 1) % transports.length],
                                  to: transports[this._transportIndex] });
        this._reconnectTimer = setTimeout(() => this._open(), 0);
        return;
      }
    } else {
      this._transportIndex = this._roundStart;
    }
    // One immediate retry with a fresh token per connection lost (reset only at `connected`): a token
    // that getToken gives stale again then waits its turn on the schedule, like any refusal.
    if (code === TOKEN_EXPIRED && this.config.getToken && !this._refreshing) {
      this._refreshing = true;
      this._emit("$reconnect", { attempt: this.reconnectAttempts, delay: 0, reason: "token expired" });
      this._reconnectTimer = setTimeout(() => this._open(), 0);
      return;
    }
    // 4010 and 4100-4399: the backend disconnected this client (server API Disconnect).
    if (TERMINAL_CLOSE_CODES.has(code) || (code >= 4100 && code <= 4399)) {
      this._stopped = true;
      this._emit("$reconnect_failed", { reason: `terminal close code ${code}` });
      return;
    }
    if (this.reconnectAttempts >= this.config.maxReconnectAttempts) {
      this._stopped = true;
      this._emit("$reconnect_failed", { reason: "maxReconnectAttempts reached", attempts: this.reconnectAttempts });
      return;
    }
    const delay = this.reconnectDelay(this.reconnectAttempts);
    this.reconnectAttempts += 1;
    this._emit("$reconnect", { attempt: this.reconnectAttempts, delay });
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  /** The edge's answer per topic: recovered (the missed messages follow), or not (re-sync needed). */
  _recovered(recovery) {
    for (const [topic, report] of Object.entries(recovery || {})) {
      if (report.recovered) {
        this._emit("$recovered", { topic, ...report });
      } else {
        // Where the topic is now, as the edge says (even if that is behind); without an epoch
        // ("history unavailable") it says nothing, and the position held is still the one to ask from.
        if (report.epoch) this.positions.set(topic, { offset: report.offset, epoch: report.epoch });
        this._emit("$recovery_failed", { topic, ...report });
      }
    }
  }

  /**
   * A message's position. Never backwards within an epoch: a retained state replayed after a
   * recovering subscribe is older than what was delivered, and the next reconnect would repeat it all.
   */
  _saw(topic, offset, epoch) {
    const held = this.positions.get(topic);
    if (held && held.epoch === epoch && held.offset >= offset) return;
    this.positions.set(topic, { offset, epoch });
  }

  _reconnectNow() {
    this._transportIndex = this._roundStart;
    clearTimeout(this._reconnectTimer);
    if (!this.ws) this._open();
  }

  _receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (err) {
      this._emit("$error", err);
      return;
    }
    if (frame.type === "batch" && Array.isArray(frame.messages)) frame.messages.forEach((m) => this._dispatch(m));
    else this._dispatch(frame);
  }

  _dispatch(message) {
    switch (message.type) {
      case "connected": {
        this.clientId = message.data && message.data.client_id;
        this.expiresAt = (message.data && message.data.expires_at) || null;
        this._established(); // (join/leave is asked for by the resubscribe, with the positions)
        this._scheduleRefresh(this.expiresAt, message.timestamp);
        // The URL's recoveries; those of topics this client subscribes itself come with that ack.
        const recovery = (message.data && message.data.recovery) || {};
        this._recovered(Object.fromEntries(Object.entries(recovery).filter(([topic]) => !this.topics.has(topic))));
        break;
      }
      case "pong":
        clearTimeout(this._pongTimer);
        this._pongTimer = null;
        this._settle(message.id, (p) => p.resolve(message));
        break;
      case "ack":
        if (message.data && message.data.server) {
          // The backend (un)subscribed this connection: kept across reconnects like the client's own.
          const subscribed = message.data.type === "subscribe";
          message.data.topics.forEach((t) => (subscribed ? this.topics.add(t) : this._dropped(t)));
          this._emit(subscribed ? "$server_subscribe" : "$server_unsubscribe", message.data, message);
        }
        if (message.data && message.data.type === "refresh" && !message.data.topic) {
          this.expiresAt = message.data.expires_at;
          this._scheduleRefresh(this.expiresAt, message.timestamp);
        }
        this._settle(message.id, (p) => p.resolve(message.data));
        break;
      case "recovery": // the edge lost its stream and cannot fill the gap: re-sync this topic
        this._recovered({ [message.data.topic]: message.data });
        break;
      case "refresh_required":
        this._refreshRequired(message);
        break;
      case "unsubscribed": // its subscription token ran out: subscribe again with a fresh one, from where it was
        this._emit("$unsubscribed", message.data);
        if (this.topics.has(message.data.topic) && this.config.getSubscriptionToken) {
          this._resubscribeTopics([message.data.topic]);
        }
        break;
      case "error": {
        const error = message.error || {};
        this._settle(message.id, (p) => p.reject(new ProtocolError(error.code, error.message, message)));
        break;
      }
      default:
        break;
    }
    if (message.topic && typeof message.offset === "number" && message.epoch) {
      this._saw(message.topic, message.offset, message.epoch);
    }
    if (message.topic && !PRESENCE_EVENTS.has(message.type)) this._emit(message.topic, message.data, message);
    this._emit(message.type, message.data, message);
  }

  _settle(id, fn) {
    const pending = this._pending.get(id);
    if (!pending) return;
    this._pending.delete(id);
    clearTimeout(pending.timer);
    fn(pending);
  }

  _emit(key, data, message) {
    const set = this._handlers.get(key);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(data, message);
      } catch (err) {
        console.error(`handler for ${key} failed`, err);
      }
    }
  }

  _setConnected(connected) {
    if (this.connected === connected) return;
    this.connected = connected;
    for (const cb of [...this._connectionHandlers]) cb(connected);
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    this._pingTimer = setInterval(() => {
      if (!this.connected || !this.ws) return;
      this.send({ type: "ping" });
      // The oldest unanswered ping sets the deadline; later pings must not push it back.
      if (this._pongTimer === null) this._pongTimer = setTimeout(() => this._dead(), this.config.pongTimeout);
    }, this.config.pingInterval);
  }

  _stopHeartbeat() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pongTimer = null;
  }

  /** No pong in time: the connection is dead even if the browser has not noticed. */
  _dead() {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    try {
      ws.close(4000, "pong timeout");
    } catch (err) {
      /* already closing */
    }
    this._closed(4000, "pong timeout");
  }

  _rejectPending(error) {
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      this._pending.delete(id);
      this._unqueue(id);
      pending.reject(error);
    }
  }

  /** A frame for the next connection; past MAX_OUTBOX the oldest is dropped (its request rejected). */
  _queue(id, text) {
    this._outbox.push({ id, text });
    if (this._outbox.length <= MAX_OUTBOX) return;
    const dropped = this._outbox.shift();
    const error = new Error(`outbox full (${MAX_OUTBOX} frames while offline): ${dropped.id} dropped`);
    this._settle(dropped.id, (p) => p.reject(error));
    this._emit("$error", error);
  }

  _unqueue(id) {
    const at = this._outbox.findIndex((entry) => entry.id === id);
    if (at >= 0) this._outbox.splice(at, 1);
  }

  /** Unsubscribed (by this client, or the backend): not subscribed again, not even for join/leave. */
  _dropped(topic) {
    this.topics.delete(topic);
    this.joinLeave.delete(topic);
  }
}

let defaultService = null;

/** The guide's shared instance (`wsService`), made on first use with the default config. */
export function getWsService(config) {
  if (!defaultService) defaultService = new WebSocketService(config);
  return defaultService;
}

export default WebSocketService;
