// The dashboard (GET /dashboard): reads GET /stats, GET /workers and the listing (GET /task) every few
// seconds and draws them; cancel and retry buttons post to /task/<id>/cancel and /task/<id>/retry.
// A file of its own, with no framework and no inline script, so the page works offline and under a
// strict Content-Security-Policy. Everything from the server is put in the page as text, never as HTML:
// error messages and task types are whatever tasks and clients made them.
"use strict";

(function () {
  const body = document.body;
  const root = body.dataset.root || "";
  const refreshMs = 1000 * (Number(body.dataset.refresh) || 3);
  const STATUSES = ["waiting", "running", "done", "failed", "cancelled"];
  const SVG = "http://www.w3.org/2000/svg";
  const numbers = new Intl.NumberFormat("en");

  const $ = (selector) => document.querySelector(selector);
  const live = $("#live");
  const showGone = $("#show-gone");
  const filtersForm = $("#filters");

  // -- small helpers ---------------------------------------------------------------

  // An element with attributes ("text" sets its text) and children (nodes or strings, both as text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) node.append(child);
    return node;
  }

  // The server's clock, from the Date header of its answers: ages are computed as the server sees them.
  let skewSeconds = 0;
  const serverNow = () => Date.now() / 1000 + skewSeconds;

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.max(0, seconds);
    if (seconds < 10) return `${seconds.toFixed(1)} s`;
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
    return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
  }

  const ago = (unix) => (unix === null || unix === undefined ? "–" : `${duration(serverNow() - unix)} ago`);

  function clock(unix) {
    const date = new Date(unix * 1000);
    return date.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
  }

  function shortText(value, max) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function taskLink(task) {
    return el("a", { href: `${root}/task/${encodeURIComponent(task.id)}`, title: task.id, class: "id", text: task.id.slice(0, 8) });
  }

  const badge = (status) => el("span", { class: `badge status-${status}`, text: status });

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path) {
    const response = await fetch(root + path, { method, headers: { Accept: "application/json" }, cache: "no-store" });
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) skewSeconds = (date - Date.now()) / 1000;
    let answer = null;
    try {
      answer = await response.json();
    } catch (err) {
      answer = null;
    }
    if (!response.ok) {
      const message = answer && answer.message ? answer.message : response.statusText;
      throw new ApiFailure(response.status, message);
    }
    return answer;
  }

  // Rows are kept by key and only their changed cells replaced, so a button under the pointer is not
  // swapped for a copy between press and release on every refresh.
  function fillRows(tbody, items, makeRow, emptyText) {
    if (!items.length) {
      const columns = tbody.closest("table").tHead.rows[0].cells.length;
      const row = el("tr", { class: "empty" }, el("td", { colspan: columns, text: emptyText }));
      tbody.replaceChildren(row);
      return;
    }
    const old = new Map();
    for (const row of tbody.rows) if (row.dataset.id) old.set(row.dataset.id, row);
    const rows = items.map((item) => {
      const fresh = makeRow(item);
      const kept = old.get(fresh.dataset.id);
      if (!kept || kept.cells.length !== fresh.cells.length) return fresh;
      for (const name of kept.getAttributeNames()) if (!fresh.hasAttribute(name)) kept.removeAttribute(name);
      for (const name of fresh.getAttributeNames()) kept.setAttribute(name, fresh.getAttribute(name));
      for (let i = 0; i < fresh.cells.length; i++) {
        if (kept.cells[i].innerHTML !== fresh.cells[i].innerHTML) kept.replaceChild(fresh.cells[i].cloneNode(true), kept.cells[i]);
      }
      return kept;
    });
    tbody.replaceChildren(...rows);
  }

  // -- actions ----------------------------------------------------------------------

  const pending = new Set(); // "cancel:<id>" while its request is on its way

  function actionButton(action, task) {
    const busy = pending.has(`${action}:${task.id}`);
    const label = action === "cancel" ? "Cancel" : "Retry";
    const disabled = busy || (action === "cancel" && task.cancel_requested);
    const text = busy ? `${label}…` : action === "cancel" && task.cancel_requested ? "Cancelling" : label;
    return el("button", { type: "button", class: `action ${action}`, "data-action": action, "data-id": task.id, disabled, text });
  }

  function actionsFor(task) {
    if (task.status === "waiting" || task.status === "running") return actionButton("cancel", task);
    if (task.status === "failed" || task.status === "cancelled") return actionButton("retry", task);
    return null;
  }

  function notify(text, isProblem) {
    const out = $("#notice");
    out.textContent = text;
    out.classList.toggle("bad", Boolean(isProblem));
    out.hidden = !text;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const { action, id } = button.dataset;
    const key = `${action}:${id}`;
    pending.add(key);
    button.disabled = true;
    button.textContent += "…";
    try {
      const task = await api("POST", `/task/${encodeURIComponent(id)}/${action}`);
      const done = action === "cancel" ? (task.status === "cancelled" ? "cancelled" : "asked to stop") : "sent to run again";
      notify(`Task ${id.slice(0, 8)} (${task.type}) ${done}.`, false);
    } catch (err) {
      notify(`Could not ${action} task ${id.slice(0, 8)}: ${err.message}`, true);
    } finally {
      pending.delete(key);
      refresh();
    }
  });

  // -- the sections -------------------------------------------------------------------

  function drawCounts(stats) {
    for (const status of STATUSES) $(`#count-${status}`).textContent = numbers.format(stats.statuses[status] || 0);
    $("#oldest-waiting").textContent = stats.oldest_waiting_seconds === null ? "none" : duration(stats.oldest_waiting_seconds);
    const handlers = stats.workers.filter((w) => w.kind === "handler" && w.alive).length;
    $("#handlers-alive").textContent = String(handlers);
    $("#counted").textContent = stats.taken === null ? "not counted yet" : `counted ${ago(stats.taken)}`;
  }

  function drawTypes(stats) {
    const names = Object.keys(stats.types).sort();
    fillRows(
      $("#types tbody"),
      names,
      (name) => {
        const counts = stats.types[name];
        const cells = STATUSES.map((status) =>
          el("td", { class: counts[status] ? "num" : "num muted", text: numbers.format(counts[status] || 0) }),
        );
        return el("tr", { "data-id": name }, el("td", { text: name }), ...cells);
      },
      "No tasks stored.",
    );
    const unserved = $("#unserved");
    unserved.replaceChildren();
    if (stats.unserved_types.length) {
      unserved.className = "small warning";
      unserved.append("No live handler serves ", el("strong", { text: stats.unserved_types.join(", ") }), ": tasks of these types wait.");
    } else {
      unserved.className = "small muted";
      unserved.textContent = "Every task type has a live handler.";
    }
    const list = $("#type-names");
    if (list.options.length === 0 || names.some((name) => !knownTypes.has(name))) {
      for (const name of names) knownTypes.add(name);
      list.replaceChildren(...[...knownTypes].sort().map((name) => el("option", { value: name })));
    }
  }

  // The smallest of 1, 2 and 5 times a power of ten that is at least `value`.
  function niceStep(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function drawThroughput(minutes) {
    const plot = $("#throughput");
    const width = 720, height = 220, left = 44, right = 8, top = 10, bottom = 24;
    const inner = { w: width - left - right, h: height - top - bottom };
    const highest = Math.max(0, ...minutes.map((m) => m.done + m.failed));
    // Two to four gridlines a round number apart, the highest bar reaching past the one below the top.
    const step = highest <= 4 ? 1 : niceStep(highest / 4);
    const scale = highest <= 4 ? 4 : step * Math.ceil(highest / step);
    const y = (count) => top + inner.h - (count / scale) * inner.h;
    const parts = [];
    for (let value = 0; value <= scale; value += step) {
      parts.push(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(value), y2: y(value) }));
      parts.push(svg("text", { class: "axis", x: left - 6, y: y(value) + 4, "text-anchor": "end", text: numbers.format(value) }));
    }
    const slot = inner.w / Math.max(minutes.length, 1);
    minutes.forEach((m, i) => {
      const x = left + i * slot;
      const label = new Date(m.minute * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      const group = svg("g", {}, svg("title", { text: `${label}: ${m.done} done, ${m.failed} failed` }));
      // An invisible full-height rectangle: the tooltip shows wherever the pointer is in the minute's column.
      group.append(svg("rect", { class: "hover", x, y: top, width: slot, height: inner.h }));
      if (m.done) group.append(svg("rect", { class: "done", x: x + 0.5, y: y(m.done), width: Math.max(slot - 1, 1), height: y(0) - y(m.done) }));
      if (m.failed) {
        const base = y(m.done);
        group.append(svg("rect", { class: "failed", x: x + 0.5, y: base - (y(0) - y(m.failed)), width: Math.max(slot - 1, 1), height: y(0) - y(m.failed) }));
      }
      parts.push(group);
      if (i === minutes.length - 1) {
        parts.push(svg("text", { class: "axis", x: x + slot, y: height - 6, "text-anchor": "end", text: label }));
      } else if (i % 10 === 0 && i < minutes.length - 6) {
        parts.push(svg("text", { class: "axis", x: i === 0 ? x : x + slot / 2, y: height - 6, "text-anchor": i === 0 ? "start" : "middle", text: label }));
      }
    });
    parts.push(svg("line", { class: "baseline", x1: left, x2: width - right, y1: y(0), y2: y(0) }));
    plot.replaceChildren(...parts);
    const done = minutes.reduce((sum, m) => sum + m.done, 0);
    const failed = minutes.reduce((sum, m) => sum + m.failed, 0);
    $("#throughput-total").textContent = `— ${numbers.format(done)} done and ${numbers.format(failed)} failed in the hour`;
  }

  function drawWorkers(list) {
    fillRows(
      $("#workers tbody"),
      list,
      (w) => {
        const current = (w.current || []).map((t) => `${t.type} ${String(t.id).slice(0, 8)}`).join(", ");
        const heartbeat = w.alive ? `${duration(w.heartbeat_age)} ago` : w.stopped ? `stopped ${ago(w.stopped)}` : `lapsed ${duration(w.heartbeat_age)} ago`;
        return el(
          "tr",
          { "data-id": w.id, class: w.alive ? "" : "gone" },
          el("td", { text: w.name }),
          el("td", { text: w.kind }),
          el("td", { text: w.host }),
          el("td", { class: "num", text: w.pid }),
          el("td", { text: duration(serverNow() - w.started) }),
          el("td", { class: w.alive ? "" : "bad", text: heartbeat }),
          el("td", { class: "num", text: numbers.format(w.tasks_done) }),
          el("td", { class: "num", text: numbers.format(w.tasks_failed) }),
          el("td", { class: "small", text: current || "–" }),
          el("td", { class: "small", text: w.kind === "janitor" ? "–" : (w.task_types || []).join(", ") || "all" }),
        );
      },
      showGone.checked ? "No handler or janitor in the last hour." : "No handler or janitor is alive: nothing runs tasks.",
    );
  }

  function progressOf(task) {
    const p = task.progress;
    if (!p) return el("span", { class: "muted", text: task.status === "running" ? "no progress reported" : "" });
    const percent = Math.round(p.fraction * 100);
    return el(
      "div",
      { class: "progress" },
      el("progress", { max: "1", value: p.fraction, "aria-label": `${percent} %` }),
      el("span", { class: "percent", text: `${percent} %` }),
      p.message ? el("span", { class: "message", text: p.message }) : null,
    );
  }

  function errorOf(task) {
    const error = task.error || task.last_error;
    if (!error) return el("span", { class: "muted", text: "–" });
    const message = el("span", { class: "error-message", title: error.message, text: shortText(error.message, 300) });
    if (!error.traceback) return message;
    return el("div", {}, message, el("details", {}, el("summary", { text: "traceback" }), el("pre", { text: error.traceback })));
  }

  function drawRunning(tasks, total) {
    fillRows(
      $("#running tbody"),
      tasks,
      (task) =>
        el(
          "tr",
          { "data-id": task.id },
          el("td", {}, taskLink(task)),
          el("td", { text: task.type }),
          el("td", { class: "small", text: task.worker || "–" }),
          el("td", { text: task.started ? duration(serverNow() - task.started) : "–" }),
          el("td", { class: "num", text: `${task.attempts} / ${task.max_attempts}` }),
          el("td", { class: "wide" }, progressOf(task)),
          el("td", {}, actionButton("cancel", task)),
        ),
      "Nothing is running.",
    );
    const more = total > tasks.length ? ` (the newest ${tasks.length} of ${numbers.format(total)})` : "";
    $("#running-section h2").textContent = `Running${more}`;
  }

  function drawFailures(tasks) {
    fillRows(
      $("#failures tbody"),
      tasks,
      (task) =>
        el(
          "tr",
          { "data-id": task.id },
          el("td", {}, taskLink(task)),
          el("td", { text: task.type }),
          el("td", { text: ago(task.finished) }),
          el("td", { class: "num", text: `${task.attempts} / ${task.max_attempts}` }),
          el("td", { class: "wide" }, errorOf(task)),
          el("td", {}, actionButton("retry", task)),
        ),
      "No failed task.",
    );
  }

  function outcomeOf(task) {
    if (task.status === "running") return progressOf(task);
    if (task.status === "done") return el("code", { class: "result", text: shortText(task.result, 120) });
    if (task.status === "failed" || task.status === "cancelled") return errorOf(task);
    const wait = task.run_at - serverNow();
    return el("span", { class: "muted", text: wait > 1 ? `runs in ${duration(wait)}` : `waiting for ${duration(serverNow() - task.created)}` });
  }

  function drawTasks(page) {
    fillRows(
      $("#tasks tbody"),
      page.tasks,
      (task) =>
        el(
          "tr",
          { "data-id": task.id, "data-status": task.status },
          el("td", {}, taskLink(task)),
          el("td", { text: task.type }),
          el("td", {}, badge(task.status), task.cancel_requested && task.status === "running" ? el("span", { class: "small muted", text: " cancelling" }) : null),
          el("td", { title: clock(task.created), text: ago(task.created) }),
          el("td", { class: "num", text: `${task.attempts} / ${task.max_attempts}` }),
          el("td", { class: "wide" }, outcomeOf(task)),
          el("td", {}, actionsFor(task)),
        ),
      "No task matches.",
    );
    nextCursor = page.next;
    $("#next-page").disabled = !nextCursor;
    $("#prev-page").disabled = pageIndex === 0;
    $("#first-page").disabled = pageIndex === 0;
    $("#page-number").textContent = `page ${pageIndex + 1}`;
  }

  // -- the task table's filters and pages -----------------------------------------------

  const knownTypes = new Set();
  let filters = new URLSearchParams({ limit: "50" });
  let cursors = [null]; // the cursor of each page seen, the first page has none
  let pageIndex = 0;
  let nextCursor = null;

  // datetime-local gives the browser's local time without a zone; the listing takes ISO 8601 with one.
  function isoTime(value) {
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? value : date.toISOString();
  }

  function readFilters() {
    const params = new URLSearchParams();
    const data = new FormData(filtersForm);
    for (const name of ["status", "type", "since", "until", "limit"]) {
      const value = String(data.get(name) || "").trim();
      if (value) params.set(name, name === "since" || name === "until" ? isoTime(value) : value);
    }
    return params;
  }

  function taskPagePath() {
    const params = new URLSearchParams(filters);
    if (cursors[pageIndex]) params.set("cursor", cursors[pageIndex]);
    return `/task?${params}`;
  }

  filtersForm.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = readFilters();
    cursors = [null];
    pageIndex = 0;
    refresh();
  });
  filtersForm.addEventListener("reset", () => {
    setTimeout(() => filtersForm.requestSubmit(), 0); // once the form shows its defaults again
  });
  $("#next-page").addEventListener("click", () => {
    if (!nextCursor) return;
    cursors = cursors.slice(0, pageIndex + 1).concat([nextCursor]);
    pageIndex += 1;
    refresh();
  });
  $("#prev-page").addEventListener("click", () => {
    pageIndex = Math.max(0, pageIndex - 1);
    refresh();
  });
  $("#first-page").addEventListener("click", () => {
    pageIndex = 0;
    refresh();
  });

  // -- refreshing -------------------------------------------------------------------------

  function problemText(what, err) {
    if (err.status === 401) return `${what}: not signed in as an operator (401). Reload the page to sign in.`;
    if (err.status === 403) return `${what}: not an operator (403): ${err.message}`;
    if (err.status) return `${what}: the server answered ${err.status}: ${err.message}`;
    return `${what}: the server cannot be reached (${err.message})`;
  }

  async function load() {
    const [stats, workers, running, failures, page] = await Promise.allSettled([
      api("GET", "/stats"),
      showGone.checked ? api("GET", "/workers?gone=true") : Promise.resolve(null),
      api("GET", "/task?status=running&limit=50"),
      api("GET", "/task?status=failed&limit=10"),
      api("GET", taskPagePath()),
    ]);
    const problems = [];
    const take = (what, result, draw) => {
      if (result.status === "fulfilled") {
        try {
          draw(result.value);
        } catch (err) {
          problems.push(`${what}: ${err.message}`);
        }
      } else {
        problems.push(problemText(what, result.reason));
      }
    };
    take("counts", stats, (value) => {
      drawCounts(value);
      drawTypes(value);
      drawThroughput(value.throughput);
      if (!showGone.checked) drawWorkers(value.workers);
    });
    if (showGone.checked) take("workers", workers, (value) => drawWorkers(value.workers));
    const runningTotal = stats.status === "fulfilled" ? stats.value.statuses.running : 0;
    take("running tasks", running, (value) => drawRunning(value.tasks, runningTotal));
    take("failures", failures, (value) => drawFailures(value.tasks));
    take("tasks", page, drawTasks);
    const problem = $("#problem");
    problem.textContent = problems.join(" · ");
    problem.hidden = problems.length === 0;
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  let timer = null;
  let inflight = null;
  let again = false;

  function schedule() {
    clearTimeout(timer);
    if (live.checked && !document.hidden) timer = setTimeout(refresh, refreshMs);
  }

  // One refresh at a time; one asked for meanwhile runs right after (its filters or page may be new).
  function refresh() {
    if (inflight) {
      again = true;
      return inflight;
    }
    clearTimeout(timer);
    inflight = load()
      .catch((err) => {
        const problem = $("#problem");
        problem.textContent = `The page failed to draw: ${err.message}`;
        problem.hidden = false;
      })
      .finally(() => {
        inflight = null;
        if (again) {
          again = false;
          refresh();
        } else {
          schedule();
        }
      });
    return inflight;
  }

  live.addEventListener("change", () => (live.checked ? refresh() : clearTimeout(timer)));
  showGone.addEventListener("change", () => refresh());
  document.addEventListener("visibilitychange", () => (document.hidden ? clearTimeout(timer) : refresh()));

  // The task types this server knows, for the type filter's suggestions (GET /tasks is public).
  api("GET", "/tasks")
    .then((types) => {
      for (const name of Object.keys(types)) knownTypes.add(name);
      $("#type-names").replaceChildren(...[...knownTypes].sort().map((name) => el("option", { value: name })));
    })
    .catch(() => {});
  refresh();
})();
