// The live task dashboard: built on push-client.js, no build step.
// Updates land in `tasks` at once but reach the DOM at most once per animation frame, so a flood of
// progress messages cannot freeze the page (the guide's "message throttling").
import { WebSocketService } from "/static/push-client.js";

const $ = (selector) => document.querySelector(selector);
const TASK_TOPICS = ["task:progress", "task:status", "task:list"];
const FINISHED = ["completed", "failed", "cancelled"];

const tasks = new Map(); // task_id -> task (the task_list shape)
const dirty = new Set(); // task ids whose row must be redrawn
let frameRequested = false;
let userTopic = null;

// The local demo's edge mints tokens (EDGE_DEV_TOKENS); without it the page stays anonymous and
// the notifications panel cannot subscribe to user topics.
async function getToken() {
  const response = await fetch(`/dev/token?sub=${encodeURIComponent(currentUser())}`);
  return response.ok ? (await response.json()).token : undefined;
}

function currentUser() {
  return $("#user-id").value.trim() || "demo";
}

const client = new WebSocketService({
  topics: TASK_TOPICS,
  getToken,
  reconnectInterval: 1000,
  maxReconnectInterval: 5000,
  maxReconnectAttempts: Infinity,
});
window.dashboard = { client, tasks };

function upsert(taskId, patch) {
  const task = tasks.get(taskId) || { task_id: taskId, status: "pending", progress: { percentage: 0, current: "", total: 0, completed: 0 } };
  if (FINISHED.includes(task.status) && patch.status === undefined) {
    return; // a late progress message must not move a finished task's bar
  }
  const merged = { ...task, ...patch, progress: { ...task.progress, ...(patch.progress || {}) } };
  tasks.set(taskId, merged);
  dirty.add(taskId);
  scheduleRender();
}

function forget(taskId) {
  tasks.delete(taskId);
  dirty.delete(taskId);
  $(`#tasks tr[data-task-id="${CSS.escape(taskId)}"]`)?.remove();
  clearTimeout(recount.get(taskId));
  recount.delete(taskId);
  if (watched.delete(taskId)) client.unsubscribe(WATCH_PREFIX + taskId).catch(() => {}); // a free slot for another
  $("#no-tasks").hidden = tasks.size > 0;
}

function scheduleRender() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(render);
}

function render() {
  frameRequested = false;
  const body = $("#tasks tbody");
  for (const taskId of dirty) {
    const task = tasks.get(taskId);
    let row = body.querySelector(`tr[data-task-id="${CSS.escape(taskId)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.taskId = taskId;
      row.innerHTML = `<td class="id"></td><td><span class="badge status"></span></td>
        <td><span class="bar"><span></span></span><span class="pct"></span></td>
        <td class="current"></td><td class="count"></td><td class="watchers">–</td>
        <td><button class="cancel" type="button">Cancel</button></td>`;
      row.querySelector(".id").textContent = taskId;
      row.querySelector("button.cancel").addEventListener("click", () => cancel(taskId));
      body.prepend(row);
      watch(taskId);
    }
    const { status, progress } = task;
    const badge = row.querySelector(".status");
    badge.textContent = status;
    badge.className = `badge status ${status}`;
    row.querySelector(".bar > span").style.width = `${progress.percentage}%`;
    row.querySelector(".pct").textContent = `${progress.percentage}%`;
    row.querySelector(".current").textContent = progress.current || "–";
    row.querySelector(".count").textContent = `${progress.completed}/${progress.total}`;
    row.querySelector("button.cancel").disabled = FINISHED.includes(status);
  }
  dirty.clear();
  $("#no-tasks").hidden = tasks.size > 0;
}

// How many open dashboards show each task: a presence topic per task (PUSH_PRESENCE_RULES
// `task:watch:*:presence+joinleave`); its join/leave events (or summaries) say when to read the count
// again. Without the rule the column stays "–". At most WATCH_LIMIT tasks (a connection's topic limit).
const WATCH_LIMIT = 50;
const WATCH_PREFIX = "task:watch:";
const watched = new Set();
const recount = new Map(); // task id -> pending timer
let presenceOff = false;

function watch(taskId) {
  if (presenceOff || watched.has(taskId) || watched.size >= WATCH_LIMIT) return;
  watched.add(taskId);
  client.subscribe(WATCH_PREFIX + taskId, { joinLeave: true })
    .then(() => countWatchers(taskId))
    .catch((err) => {
      watched.delete(taskId);
      client.unsubscribe(WATCH_PREFIX + taskId).catch(() => {});
      if (err.code === "PRESENCE_DISABLED") presenceOff = true;
    });
}

function countWatchers(taskId) {
  if (recount.has(taskId)) return; // one read for a burst of joins and leaves
  recount.set(taskId, setTimeout(async () => {
    recount.delete(taskId);
    try {
      const { clients, users } = await client.presenceStats(WATCH_PREFIX + taskId);
      const cell = $(`#tasks tr[data-task-id="${CSS.escape(taskId)}"] .watchers`);
      if (cell) {
        cell.textContent = String(clients);
        cell.title = `${clients} dashboards, ${users} users`;
      }
    } catch (err) {
      // unavailable for a moment: the next join or leave reads it again
    }
  }, 100));
}

for (const type of ["join", "leave", "presence_summary"]) {
  client.on(type, (data, message) => {
    if (message.topic && message.topic.startsWith(WATCH_PREFIX)) countWatchers(message.topic.slice(WATCH_PREFIX.length));
  });
}

client.on("task:list", (data, message) => {
  for (const task of data.tasks) upsert(task.task_id, task);
  // The newest list is the truth: a task it leaves out was forgotten by the task service (or belonged to
  // a task service that restarted). Only a whole list says so: one cut to its size bound
  // (TASK_LIST_MAX_BYTES) counts the tasks it left out in `omitted`, and those are still there.
  if (data.omitted !== 0) return;
  const listed = new Set(data.tasks.map((task) => task.task_id));
  for (const [taskId, task] of tasks) {
    // A task started after the list was published (its ack came first) cannot be in it.
    if (!listed.has(taskId) && !(task.created_at > message.timestamp)) forget(taskId);
  }
});
client.on("task:status", (data) => upsert(data.task_id, { status: data.status, error: data.error }));
client.on("task:progress", (data) => upsert(data.task_id, { progress: data.progress }));
client.on("notification", (data, message) => {
  const item = document.createElement("li");
  const when = new Date(message.timestamp).toLocaleTimeString();
  // `from_user` is the sender's verified user (null: anonymous); `from` only the client_id it chose.
  const sender = "from_user" in data ? (data.from_user ?? `anonymous ${data.from}`) : data.from;
  item.textContent = `${when} — ${sender ? `${sender}: ` : ""}${data.message}`;
  $("#notifications").prepend(item);
});
// Missed task updates that cannot be recovered (e.g. the push service restarted): re-sync the list.
client.on("$recovery_failed", async ({ topic }) => {
  if (!topic.startsWith("task:")) return;
  try {
    // The task API wants the same token as the WebSocket where anonymous connections are off.
    const token = await getToken();
    const response = await fetch("/api/tasks", token ? { headers: { authorization: `Bearer ${token}` } } : {});
    if (response.ok) for (const task of (await response.json()).tasks) upsert(task.task_id, task);
  } catch (err) {
    showError(err);
  }
});

// Which transport carries the session (WebSocket, or SSE / HTTP-streaming where WebSocket is blocked).
client.on("$transport", ({ transport }) => {
  const indicator = $("#connection");
  indicator.dataset.transport = transport;
  indicator.title = `over ${transport}`;
});

client.onConnectionChange((connected) => {
  const indicator = $("#connection");
  indicator.dataset.state = connected ? "connected" : "disconnected";
  indicator.textContent = connected ? "connected" : "disconnected";
});

function showError(err) {
  const box = $("#form-error");
  box.hidden = !err;
  box.textContent = err ? String(err.message || err) : "";
}

$("#start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const symbols = $("#symbols").value.split(",").map((s) => s.trim()).filter(Boolean);
  const interval = Number($("#interval").value);
  try {
    const ack = await client.request({ type: "task_start", data: { params: { symbols, interval } } });
    // Pushed updates may have overtaken the acknowledgement: it only fills in an unknown task.
    if (!tasks.has(ack.task.task_id)) upsert(ack.task.task_id, ack.task);
    showError(null);
  } catch (err) {
    showError(err);
  }
});

async function cancel(taskId) {
  try {
    await client.request({ type: "task_cancel", data: { task_id: taskId } });
    showError(null);
  } catch (err) {
    showError(err);
  }
}

function watchUser() {
  const topic = `user:${currentUser()}`;
  if (topic === userTopic) return;
  if (userTopic) client.unsubscribe([userTopic]).catch(showError);
  userTopic = topic;
  client.subscribe([topic]).catch(showError);
}

// Another user: a token for them, so a new connection (user topics are readable by their owner only).
$("#user-id").addEventListener("change", () => {
  if (userTopic) client.topics.delete(userTopic);
  userTopic = `user:${currentUser()}`;
  client.topics.add(userTopic); // subscribed by the new connection
  client.disconnect();
  client.connect();
});
$("#user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  watchUser();
  try {
    await client.request({ type: "send_message", data: { recipient: $("#recipient").value.trim(), content: $("#message").value } });
    showError(null);
  } catch (err) {
    showError(err);
  }
});

watchUser();
client.connect();
