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

/** Close codes after which reconnecting as-is cannot help (see the README's table). */
export const TERMINAL_CLOSE_CODES = new Set([4003, 4400]); // = ws_edge/core/codes.py TERMINAL_CLOSE_CODES (tests/ws_edge/test_codes.py)
/** The token expired: get a fresh one (config.getToken) and reconnect at once. */
export const TOKEN_EXPIRED = 4001;
/** Positions longer than this (as JSON) stay out of the URL (the edge refuses URLs over 8000 bytes). */
const MAX_URL_POSITIONS = 2000;

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
};

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

export class WebSocketService {
  constructor(config = {}) {
    this.config = { ...DEFAULTS, ...config };
    if (!this.config.url) this.config.url = defaultUrl();
    this.ws = null;
    this.connected = false;
    this.clientId = null;
    this.topics = new Set(this.config.topics);
    /** topic -> {offset, epoch}: the last position seen, sent on resubscribe to recover what was missed. */
    this.positions = new Map();
    this.reconnectAttempts = 0;
    this._handlers = new Map(); // topic or type -> Set of handlers
    this._connectionHandlers = new Set();
    this._pending = new Map(); // message id -> { resolve, reject, timer }
    this._outbox = []; // frames sent while not connected, flushed on open
    this._counter = 0;
    this._stopped = true;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._onOnline = () => {
      if (!this._stopped && !this.connected) this._reconnectNow();
    };
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
  }

  /** Open the connection (and keep it open, reconnecting, until disconnect()). */
  connect() {
    this._stopped = false;
    this.reconnectAttempts = 0;
    clearTimeout(this._reconnectTimer);
    if (!this.ws || this.ws.readyState > WebSocket.OPEN) this._open();
  }

  /** Close for good: no reconnect; pending requests are rejected. */
  disconnect() {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    this._stopHeartbeat();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, "client disconnect");
      this._setConnected(false);
    }
    this._rejectPending(new Error("disconnected"));
  }

  /** Send a message; `id` and `timestamp` are filled in when absent. Returns the id. */
  send(message) {
    const frame = { ...message };
    if (frame.id === undefined || frame.id === null) frame.id = `${frame.type}_${Date.now()}_${++this._counter}`;
    if (frame.timestamp === undefined) frame.timestamp = Date.now();
    const text = JSON.stringify(frame);
    if (this.connected && this.ws) this.ws.send(text);
    else this._outbox.push(text);
    return frame.id;
  }

  /** Send and await the answer: resolves with an ack's `data` (or the pong), rejects on an error frame or timeout. */
  request(message, { timeout = this.config.requestTimeout } = {}) {
    return new Promise((resolve, reject) => {
      const id = this.send(message);
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error(`request ${id} timed out after ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  /** Subscribe to topics; kept across reconnects. Resolves when the edge acknowledges. */
  subscribe(topics) {
    const list = [].concat(topics);
    list.forEach((t) => this.topics.add(t));
    if (!this.connected) return Promise.resolve({ type: "subscribe", topics: list, queued: true });
    return this.request({ type: "subscribe", data: { topics: list } });
  }

  unsubscribe(topics) {
    const list = [].concat(topics);
    list.forEach((t) => this.topics.delete(t));
    if (!this.connected) return Promise.resolve({ type: "unsubscribe", topics: list, queued: true });
    return this.request({ type: "unsubscribe", data: { topics: list } });
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
        this._emit("$error", err);
        if (this._opening === opening) this._closed(1006, "getToken failed");
      }));
  }

  _connectTo(url) {
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.reconnectAttempts = 0;
      this._refreshing = false;
      this._setConnected(true);
      this._startHeartbeat();
      if (this.topics.size) {
        const topics = [...this.topics];
        const since = {};
        for (const topic of topics) if (this.positions.has(topic)) since[topic] = this.positions.get(topic);
        const data = Object.keys(since).length ? { topics, since } : { topics };
        this.request({ type: "subscribe", data })
          .then((ack) => this._recovered(ack && ack.recovery))
          .catch((err) => this._emit("$error", err));
      }
      const outbox = this._outbox.splice(0);
      outbox.forEach((text) => ws.send(text));
    };
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      if (this.ws === ws) this._closed(event.code, event.reason);
    };
    ws.onerror = () => {}; // onclose follows; nothing to add
  }

  _closed(code, reason) {
    this.ws = null;
    this._stopHeartbeat();
    this._setConnected(false);
    this._rejectPending(new Error(`connection closed (${code})`));
    this._emit("$closed", { code, reason });
    if (this._stopped) return;
    if (code === TOKEN_EXPIRED && this.config.getToken && !this._refreshing) {
      this._refreshing = true; // one immediate retry with a fresh token; then the usual schedule
      this._emit("$reconnect", { attempt: this.reconnectAttempts, delay: 0, reason: "token expired" });
      this._reconnectTimer = setTimeout(() => this._open(), 0);
      return;
    }
    this._refreshing = false;
    if (TERMINAL_CLOSE_CODES.has(code)) {
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
        this.positions.set(topic, { offset: report.offset, epoch: report.epoch });
        this._emit("$recovery_failed", { topic, ...report });
      }
    }
  }

  _reconnectNow() {
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
        this._settle(message.id, (p) => p.resolve(message.data));
        break;
      case "recovery": // the edge lost its stream and cannot fill the gap: re-sync this topic
        this._recovered({ [message.data.topic]: message.data });
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
      this.positions.set(message.topic, { offset: message.offset, epoch: message.epoch });
    }
    if (message.topic) this._emit(message.topic, message.data, message);
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
      pending.reject(error);
      this._pending.delete(id);
    }
  }
}

let defaultService = null;

/** The guide's shared instance (`wsService`), made on first use with the default config. */
export function getWsService(config) {
  if (!defaultService) defaultService = new WebSocketService(config);
  return defaultService;
}

export default WebSocketService;
