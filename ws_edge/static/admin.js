// The admin page: the edge's /admin/api (ws_edge/admin.py), no build step.
// The admin token lives in this tab's sessionStorage and goes only in the Authorization header (never
// a cookie, never a URL). Everything shown (topics, users, message data) is someone's input: it is
// written with textContent only, never as HTML.

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 2000;
const TAIL_MAX_LINES = 200;
const RATE_NAMES = {
  ws_edge_messages_received_total: "messages received from push",
  ws_edge_messages_delivered_total: "messages delivered to connections",
  ws_edge_client_frames_total: "frames from clients",
  ws_edge_connections_opened_total: "connections opened",
  ws_edge_connections_refused_total: "connections refused",
  ws_edge_error_frames_total: "error frames sent",
  ws_edge_connections: "open connections",
  ws_edge_topics: "topics",
  ws_edge_subscriptions: "subscriptions",
  ws_edge_send_queue_messages: "frames queued for slow sockets",
};

let token = sessionStorage.getItem("admin-token");
let refreshTimer = null;
let presenceTopic = null;
let tailAbort = null;
let tailDropped = 0; // frames the edge dropped for this tail so far (a slow page)

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, body) {
  const init = { headers: { authorization: `Bearer ${token}` }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/admin/api${path}`, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error || { code: `http_${response.status}`, message: JSON.stringify(answer.detail || answer) };
    if (response.status === 401 || response.status === 403) signOut(error.message);
    throw new ApiError(response.status, error.code, error.message);
  }
  return answer;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(parent, label, onClick, className = "small") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.addEventListener("click", onClick);
  parent.append(b);
  return b;
}

function uptime(ms) {
  const s = Math.floor(ms / 1000);
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

// --- signing in and out ---------------------------------------------------------------------------

async function signIn(candidate) {
  token = candidate;
  try {
    await api("/info");
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) showSignInError(err.message);
    return;
  }
  sessionStorage.setItem("admin-token", token);
  $("#sign-in-card").hidden = true;
  $("#console").hidden = false;
  $("#sign-out").hidden = false;
  setIndicator("signed-in");
  await refresh();
  refreshTimer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem("admin-token");
  clearInterval(refreshTimer);
  stopTail();
  $("#console").hidden = true;
  $("#sign-in-card").hidden = false;
  $("#sign-out").hidden = true;
  setIndicator("signed-out");
  if (message) showSignInError(message);
}

function setIndicator(state) {
  $("#session").dataset.state = state;
  $("#session").textContent = state.replace("-", " ");
}

function showSignInError(message) {
  $("#sign-in-error").textContent = message;
  $("#sign-in-error").hidden = false;
}

// --- what the cluster looks like ------------------------------------------------------------------

async function refresh() {
  const [info, metrics, channels] = await Promise.all([
    api("/info"), api("/metrics"), api(`/channels?pattern=${encodeURIComponent($("#pattern").value.trim())}`),
  ]);
  renderNodes(info);
  renderRates(metrics);
  renderChannels(channels);
  if (presenceTopic !== null) await showPresence(presenceTopic);
}

function renderNodes(info) {
  $("#answered-by").textContent = `(answered by edge ${info.edge})`;
  const body = $("#nodes tbody");
  body.replaceChildren();
  for (const node of info.nodes) {
    const row = body.insertRow();
    row.dataset.kind = node.kind;
    row.dataset.nodeId = node.id;
    if (node.kind === "edge" && node.id === info.edge) row.className = "this-edge";
    cell(row, node.kind === "push" ? "push replica" : "edge");
    cell(row, node.id);
    cell(row, node.address);
    cell(row, node.version);
    cell(row, uptime(node.uptime_ms), "num uptime");
    cell(row, String(node.connections), "num connections");
    cell(row, String(node.subscriptions), "num subscriptions");
  }
}

function renderRates(metrics) {
  const body = $("#rates tbody");
  body.replaceChildren();
  for (const [name, label] of Object.entries(RATE_NAMES)) {
    const row = body.insertRow();
    row.dataset.series = name;
    cell(row, label).title = name;
    cell(row, String(Math.round(metrics.values[name] ?? 0)), "num value");
    const rate = metrics.rates && name in metrics.rates ? metrics.rates[name].toFixed(1) : "";
    cell(row, rate, "num rate");
  }
}

function renderChannels(answer) {
  const body = $("#channels tbody");
  body.replaceChildren();
  for (const channel of answer.channels) {
    const row = body.insertRow();
    row.dataset.topic = channel.topic;
    cell(row, channel.topic);
    cell(row, String(channel.subscribers), "num subscribers");
    const actions = row.insertCell();
    button(actions, "Presence", () => showPresence(channel.topic).catch(() => {}));
    button(actions, "Tail", () => startTail(channel.topic));
  }
  $("#no-channels").hidden = answer.channels.length > 0;
  $("#channels-truncated").hidden = !answer.truncated;
}

async function showPresence(topic) {
  presenceTopic = topic;
  $("#presence-card").hidden = false;
  $("#presence-topic").textContent = topic;
  const body = $("#presence tbody");
  let answer;
  try {
    answer = await api(`/presence?topic=${encodeURIComponent(topic)}`);
  } catch (err) {
    body.replaceChildren();
    $("#presence-stats").textContent = "";
    $("#presence-error").textContent = `${err.code}: ${err.message}`;
    $("#presence-error").hidden = false;
    throw err;
  }
  $("#presence-error").hidden = true;
  $("#presence-stats").textContent = `${answer.stats.clients} clients, ${answer.stats.users} users`;
  body.replaceChildren();
  for (const client of answer.clients) {
    const row = body.insertRow();
    row.dataset.clientId = client.client_id;
    cell(row, client.client_id);
    cell(row, client.user ?? "(anonymous)", "user");
    cell(row, new Date(client.joined_ms).toLocaleTimeString());
    cell(row, client.info === null ? "" : JSON.stringify(client.info));
    const actions = row.insertCell();
    if (client.user !== null) {
      button(actions, "Disconnect user", () => act("disconnect", { user: client.user }), "small cancel");
    }
    button(actions, "Disconnect client", () => act("disconnect", { client_id: client.client_id }), "small cancel");
    button(actions, "Unsubscribe", () => act("unsubscribe", { client_id: client.client_id, topic }));
  }
}

// --- actions ----------------------------------------------------------------------------------------

async function act(action, body) {
  const result = $("#action-result");
  const who = body.user ? `user ${body.user}` : `client ${body.client_id}`;
  try {
    const answer = await api(`/${action}`, body);
    result.className = answer.delivered ? "ok" : "error";
    result.textContent = answer.delivered ? `${action}: ${who} — sent to the edges` : `${action}: no edge was reached`;
  } catch (err) {
    result.className = "error";
    result.textContent = `${action} refused: ${err.code}: ${err.message}`;
  }
  setTimeout(() => refresh().catch(() => {}), 300);
}

function actionBody(action) {
  const body = { user: $("#action-user").value.trim(), client_id: $("#action-client").value.trim() };
  if (action === "disconnect") {
    const code = $("#action-code").value.trim();
    if (code) body.code = Number(code);
    body.reason = $("#action-reason").value;
  } else {
    body.topic = $("#action-topic").value.trim();
  }
  return body;
}

// --- the live tail: Server-Sent Events read through fetch (EventSource cannot send the header) -------

async function startTail(topic) {
  stopTail();
  $("#tail-topic").value = topic;
  $("#tail").replaceChildren();
  tailDropped = 0;
  const controller = new AbortController();
  tailAbort = controller;
  setTailState("connecting");
  $("#tail-stop").disabled = false;
  try {
    const response = await fetch(`/admin/api/tail?topic=${encodeURIComponent(topic)}`, {
      headers: { authorization: `Bearer ${token}` }, signal: controller.signal, cache: "no-store",
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      throw new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
    }
    await readEvents(response.body, onTailEvent);
    if (tailAbort === controller) setTailState("ended");
  } catch (err) {
    if (controller.signal.aborted) return;
    setTailState("failed");
    tailLine(`tail failed: ${err.message}`, "notice");
  }
}

function stopTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = null;
  $("#tail-stop").disabled = true;
  setTailState("idle");
}

function setTailState(state) {
  $("#tail-state").dataset.state = state;
  $("#tail-state").textContent = state;
}

async function readEvents(stream, onEvent) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let id = "";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("id: ")) id = line.slice(4);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(event, data.join("\n"), id);
    }
  }
}

function onTailEvent(event, data, id) {
  const frame = JSON.parse(data);
  const dropped = id.startsWith("dropped-") ? Number(id.slice(8)) : 0;
  if (dropped > tailDropped) {
    tailLine(`${dropped - tailDropped} frames dropped: this page read too slowly`, "notice");
    tailDropped = dropped;
  }
  if (event === "end") {
    tailLine(`the edge ended the tail: ${frame.reason}`, "notice");
    return;
  }
  if (event === "ready") {
    setTailState("live");
    tailLine(`tailing ${frame.topic} on edge ${frame.edge}`, "notice");
    return;
  }
  for (const message of frame.type === "batch" ? frame.messages : [frame]) {
    const time = new Date(message.timestamp || Date.now()).toLocaleTimeString();
    const text = message.type === "recovery" ? `${time} recovery ${JSON.stringify(message.data)}`
      : `${time} ${message.topic ?? ""} ${message.type} ${JSON.stringify(message.data ?? null)}`;
    tailLine(text, message.type === "recovery" ? "notice" : "");
  }
}

function tailLine(text, className) {
  const list = $("#tail");
  const item = document.createElement("li");
  item.textContent = text;
  if (className) item.className = className;
  list.append(item);
  while (list.children.length > TAIL_MAX_LINES) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

// --- wiring -------------------------------------------------------------------------------------------

$("#sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  $("#sign-in-error").hidden = true;
  signIn($("#admin-token").value.trim());
});
$("#sign-out").addEventListener("click", () => signOut());
$("#channels-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  refresh().catch(() => {});
});
$("#tail-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startTail($("#tail-topic").value.trim());
});
$("#tail-stop").addEventListener("click", () => stopTail());
$("#action-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const action = event.submitter?.dataset.action || "disconnect";
  act(action, actionBody(action));
});
if (token) signIn(token);
