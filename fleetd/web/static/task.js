// A task's events, live: EventSource on the API (the login cookie goes with it); the
// browser resumes from the last event id after a reconnect, and the server sends each
// event once. Each event is rendered for people, or as its raw JSON with the toggle.
"use strict";
(function () {
  const list = document.getElementById("events");
  if (!list) return;
  const task = list.dataset.task;
  const state = document.getElementById("stream-state");
  const raw = document.getElementById("raw");
  const seen = [];

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function folded(summary, body) {
    const details = el("details");
    details.append(el("summary", "", summary), el("pre", "", body));
    return details;
  }

  function human(event, li) {
    const p = event.payload;
    const item = p && typeof p === "object" ? p.item : null;
    if (item && item.type === "agent_message") {
      li.classList.add("message");
      li.append(el("span", "text", item.text || ""));
    } else if (item && item.type === "reasoning") {
      li.append(el("em", "", item.text || ""));
    } else if (item && item.type === "command_execution") {
      li.classList.add("command");
      if (item.exit_code) li.classList.add("failed");
      const exit = item.exit_code === null || item.exit_code === undefined
        ? (item.status || "running") : "exit " + item.exit_code;
      li.append(folded("$ " + item.command + "  (" + exit + ")", item.aggregated_output || ""));
    } else if (item && item.type === "file_change") {
      const changes = (item.changes || []).map((c) => c.kind + " " + c.path).join(", ");
      li.append(el("span", "", "files: " + changes));
    } else if (p && p.type === "turn.completed" && p.usage) {
      li.classList.add("usage");
      const u = p.usage;
      li.append(el("span", "", "turn: " + u.input_tokens + " in (" + (u.cached_input_tokens || 0)
        + " cached), " + u.output_tokens + " out"));
    } else if (typeof p === "string") {
      li.append(el("span", "", p));
    } else {
      li.append(el("code", "", JSON.stringify(p)));
    }
  }

  function show(event) {
    const li = el("li", "event");
    li.append(el("span", "meta", event.execution + ":" + event.seq + " " + event.type));
    if (raw.checked) li.append(el("pre", "", JSON.stringify(event, null, 2)));
    else human(event, li);
    return li;
  }

  function redraw() {
    list.replaceChildren(...seen.filter((e) => e !== null).map(show));
  }

  raw.addEventListener("change", redraw);
  // view=page: of a flood of events, the server sends the newest and says how many it left
  // out; they are in the raw log (the link).
  const source = new EventSource("/api/v1/tasks/" + task + "/events?view=page");
  source.addEventListener("skipped", (message) => {
    const info = JSON.parse(message.data);
    const li = el("li", "skipped");
    const link = el("a", "", info.count + " events not shown live (all events as JSON lines)");
    link.href = "/api/v1/tasks/" + task + "/events";
    li.append(link);
    seen.push(null);
    list.append(li);
  });
  source.addEventListener("open", () => { state.textContent = "live"; });
  source.addEventListener("events", (message) => {
    for (const event of JSON.parse(message.data)) {
      seen.push(event);
      list.append(show(event));
    }
  });
  source.addEventListener("end", () => {
    source.close();
    state.textContent = "finished";
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.closest("form").remove();
    const badge = document.getElementById("task-state");
    fetch("/api/v1/tasks/" + task).then((r) => r.json()).then((t) => {
      badge.textContent = t.state;
      badge.className = "state " + t.state;
    });
  });
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; });
})();
