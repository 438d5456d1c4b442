// cortexd console: the overview and the API pages, drawn from the daemon's JSON.
// Every value the daemon sends (names, log lines, predictions, errors) goes into the page
// as text (textContent, text nodes), never as markup: a predictor that prints <script> shows text.
"use strict";
(() => {
  const TOKEN = document.querySelector('meta[name="cortexd-token"]').content;
  const main = document.getElementById("main");
  const WINDOW_S = 900;  // the charts' 15 minutes (cortexd/history.py SECONDS)

  // -- DOM helpers: text only -----------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function swatch(color) {  // CSSOM, not a style attribute: the CSP allows no inline style
    const node = el("i", { class: "swatch" });
    node.style.background = color;
    return node;
  }
  const fmt = (v, digits = 1) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));
  const ago = (s) => (s < 90 ? `${Math.round(s)}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${(s / 3600).toFixed(1)}h`);
  const clock = (at) => new Date(at * 1000).toLocaleTimeString();
  const apiHref = (name) => `/apis/${encodeURIComponent(name)}`;
  const table = (head, rows) => el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows));
  function setConnection(text, ok) {
    const badge = document.getElementById("connection");
    badge.textContent = text;
    badge.className = ok ? "badge status-live" : "badge status-updating";
  }
  function showDaemon(d) {
    if (!d) return;
    document.getElementById("daemon").textContent =
      `v${d.version} · backend ${d.backend || "-"} · pid ${d.pid} · up ${ago(d.uptime_s)}`;
  }
  function live(url, onData) {  // one server-sent event stream; the browser reconnects it
    const source = new EventSource(url);
    source.onopen = () => setConnection("live", true);
    source.onerror = () => setConnection("reconnecting", false);
    source.onmessage = (m) => onData(JSON.parse(m.data));
    return source;
  }

  // -- the overview ---------------------------------------------------------------------
  function apiRow(a) {
    const r = a.requests || {};
    return el("tr", { "data-api": a.name },
      el("td", {}, el("a", { href: apiHref(a.name), text: a.name })),
      el("td", { class: `status-${a.status.split(" ")[0]}` }, a.status, a.reason ? el("div", { class: "muted", text: a.reason }) : null),
      el("td", { text: `${a.replicas.ready}/${a.replicas.requested}` + (a.replicas.starting ? ` (+${a.replicas.starting} starting)` : "") }),
      el("td", { text: a.in_flight }),
      el("td", { class: "rps", text: fmt(r.requests_per_s) }),
      el("td", { text: `${fmt(r.p50_ms)} / ${fmt(r.p99_ms)}` }),
      el("td", { text: `${r["2xx"] || 0} / ${r["4xx"] || 0} / ${r["5xx"] || 0}` }),
      el("td", {}, el("code", { text: a.url })),
      el("td", { class: "muted", text: a.last_decision || "" }));
  }
  function eventsList(events) {
    return el("ul", { class: "events" }, events.slice().reverse().map((e) =>
      el("li", { class: `event-${e.level}` }, el("span", { class: "muted", text: clock(e.at) + " " }),
        e.api ? el("b", { text: `[${e.api}] ` }) : null, e.message)));
  }
  function renderOverview(s) {
    showDaemon(s.daemon);
    const parts = [el("h1", { text: "APIs" })];
    if (s.daemon.config_error) parts.push(el("pre", { class: "status-error", text: s.daemon.config_error }));
    parts.push(s.apis.length ? table(["api", "status", "replicas", "in flight", "req/s", "p50 / p99 ms",
      "2xx / 4xx / 5xx", "url", "autoscaler"], s.apis.map(apiRow)) : el("p", { class: "muted", text: "no APIs deployed" }));
    if (s.splitters && s.splitters.length) {
      parts.push(el("h2", { text: "Traffic splitters" }), table(["splitter", "status", "apis (weight, share now)", "url"],
        s.splitters.map((sp) => el("tr", { "data-splitter": sp.name }, el("td", {}, el("a", { href: apiHref(sp.name), text: sp.name })), el("td", { class: `status-${sp.status}`, text: sp.status }),
          el("td", { text: sp.targets.map((t) => `${t.name} (${t.weight}, ${fmt(t.share)}%${t.shadow ? ", shadow" : ""})`).join(", ") }),
          el("td", {}, el("code", { text: sp.url }))))));
    }
    // BatchAPIs and their jobs (the status snapshot's job_list: those running, then the last few ended)
    const batch = s.batch_apis || [];
    parts.push(el("h2", { text: "Batch APIs and jobs" }), batch.length
      ? table(["batch api / job", "status", "progress", "batches ok / failed", "workers", "url"], batch.flatMap((b) => [
        el("tr", {}, el("td", {}, el("b", { text: b.name })), el("td", { text: `${b.running} running of ${b.jobs} submitted` }),
          el("td"), el("td", { text: `${b.batches_succeeded} / ${b.batches_failed}` }), el("td", { text: b.workers_running }),
          el("td", {}, el("code", { text: b.url }))),
        ...b.job_list.map((j) => {
          const total = j.queued + j.running + j.succeeded + j.failed, done = j.succeeded + j.failed;
          return el("tr", { class: "job" }, el("td", { text: `  ${j.job_id}` }),
            el("td", { class: `status-${j.ended === null ? "live" : "ended"}`, text: j.status.replace(/^status_/, "").replaceAll("_", " ") }),
            el("td", {}, el("progress", { max: total || 1, value: done }), ` ${done}/${total}`),
            el("td", { text: `${j.succeeded} / ${j.failed}` }), el("td", { text: `${j.workers_running}/${j.workers}` }), el("td"));
        })]))
      : el("p", { class: "muted", id: "jobs", text: "no BatchAPIs deployed" }));
    const g = s.gpus;
    parts.push(el("h2", { text: "GPUs" }), g && g.devices.length
      ? table(["gpu", "name", "utilization", "memory"], g.devices.map((d) => el("tr", {}, el("td", { text: d.index }), el("td", { text: d.name }),
        el("td", { text: d.utilization === null ? "-" : `${d.utilization}%` }),
        el("td", { text: d.memory_total ? `${fmt(d.memory_used / 2 ** 30)} / ${fmt(d.memory_total / 2 ** 30)} GiB` : "-" }))))
      : el("p", { class: "muted", text: (g && g.reason) || "no GPU on this host" }));
    parts.push(el("h2", { text: "Recent events" }), eventsList(s.events.slice(-30)));
    main.replaceChildren(...parts);
    // when the first overview was drawn, since navigation started (what tests/browser measures)
    if (!performance.getEntriesByName("cortexd:overview").length) performance.mark("cortexd:overview");
  }

  // -- charts: the project's own, on a canvas --------------------------------------------
  const MARK_COLORS = { scale: "#0969da", rollout: "#8250df", deploy: "#8250df", crash: "#cf222e", other: "#8c959f" };
  class Chart {
    constructor(id, title, series, unit, total) {
      this.series = series; this.unit = unit; this.total = total;
      this.now = el("span", { class: "now", id: `now-${id}` });
      this.canvas = el("canvas", { id: `chart-${id}` });
      this.node = el("div", { class: "chart" }, el("b", { text: title }), this.now,
        el("div", { class: "legend" }, series.map((s) => el("span", {}, swatch(s.color), s.label))),
        this.canvas);
    }
    draw(h) {
      const n = h.t.length;
      const last = (k) => (n ? h[k][n - 1] : null);
      this.now.textContent = this.total
        ? `${fmt(this.series.reduce((sum, s) => sum + (last(s.key) || 0), 0))} ${this.unit}`
        : this.series.map((s) => `${s.label} ${fmt(last(s.key), s.digits ?? 1)}`).join(" · ");
      const c = this.canvas, ratio = window.devicePixelRatio || 1;
      c.width = c.clientWidth * ratio; c.height = c.clientHeight * ratio;
      const g = c.getContext("2d"), W = c.width, H = c.height, pad = 16 * ratio;
      g.clearRect(0, 0, W, H);
      // the last 15 minutes, or all there is when the daemon is younger (a minute at least)
      const end = n ? h.t[n - 1] : Date.now() / 1000;
      const span = Math.min(WINDOW_S, Math.max(60, n ? end - h.t[0] : 0)), start = end - span;
      let max = 1;
      for (const s of this.series) for (const v of h[s.key]) if (v !== null && v > max) max = v;
      const x = (t) => pad + ((t - start) / span) * (W - 2 * pad);
      const y = (v) => H - pad - (v / max) * (H - 2 * pad);
      g.font = `${10 * ratio}px sans-serif`; g.fillStyle = "#656d76";
      g.fillText(`${fmt(max, max < 10 ? 1 : 0)} ${this.unit}`, pad, pad - 4 * ratio);
      g.fillText(span >= 120 ? `-${Math.round(span / 60)} min` : `-${Math.round(span)} s`, pad, H - 3 * ratio); g.fillText("now", W - pad - 18 * ratio, H - 3 * ratio);
      g.strokeStyle = "#d0d7de"; g.beginPath(); g.moveTo(pad, H - pad); g.lineTo(W - pad, H - pad); g.stroke();
      for (const m of h.marks || []) {
        if (m.at < start || m.kind === "other") continue;  // the list below has every event
        g.strokeStyle = MARK_COLORS[m.kind] || MARK_COLORS.other; g.setLineDash([4 * ratio, 3 * ratio]);
        g.beginPath(); g.moveTo(x(m.at), pad); g.lineTo(x(m.at), H - pad); g.stroke();
      }
      g.setLineDash([]); g.lineWidth = 1.5 * ratio;
      for (const s of this.series) {
        g.strokeStyle = s.color; g.beginPath();
        let pen = false;
        for (let i = 0; i < n; i++) {
          const v = h[s.key][i];
          if (v === null || h.t[i] < start) { pen = false; continue; }
          if (pen) g.lineTo(x(h.t[i]), y(v)); else g.moveTo(x(h.t[i]), y(v));
          pen = true;
        }
        g.stroke();
      }
    }
  }

  // -- one API --------------------------------------------------------------------------
  const EMPTY = () => ({ t: [], marks: [] });
  function appendHistory(h, more) {  // a reconnected stream may repeat samples: only newer ones are kept
    const last = h.t.length ? h.t[h.t.length - 1] : 0;
    const skip = (more.t || []).filter((t) => t <= last).length;
    for (const [k, values] of Object.entries(more)) {
      if (k === "marks") { h.marks.push(...values.filter((m) => !h.marks.some((o) => o.at === m.at && o.message === m.message))); h.marks = h.marks.slice(-200); continue; }
      h[k] = (h[k] || []).concat(values.slice(skip)).slice(-WINDOW_S);
    }
  }
  function summary(a) {
    const r = a.requests || {};
    return el("div", { class: "row" },
      el("span", { class: `badge status-${a.status.split(" ")[0]}`, id: "api-status", text: a.status }),
      el("span", { text: `replicas ${a.replicas.ready} ready / ${a.replicas.requested} requested (min ${a.replicas.min}, max ${a.replicas.max})` }),
      el("span", { text: `restarts ${a.replicas.restarts}` }),
      el("span", { text: `${fmt(r.requests_per_s)} req/s` }),
      el("code", { text: a.url }),
      a.reason ? el("div", { class: "status-error", text: a.reason }) : null,
      a.last_decision ? el("div", { class: "muted", text: `autoscaler: ${a.last_decision}` }) : null);
  }
  function replicasTable(a, models) {
    return table(["replica", "state", "age", "in flight", "GPUs", "health", "models in memory"],
      a.replica_list.map((r) => el("tr", { "data-replica": r.id }, el("td", {}, el("code", { text: r.id })),
        el("td", { class: `st-${r.state}`, text: r.state + (r.current ? "" : " (previous version)") }),
        el("td", { text: ago(r.age_s) }), el("td", { text: r.in_flight }),
        el("td", { text: r.gpu_ids.length ? r.gpu_ids.join(", ") : "-" }), el("td", { text: r.health || "healthy" }),
        el("td", {}, models[r.id] ? el("code", { text: JSON.stringify(models[r.id]) }) : "-"))));
  }
  function monitoringView(m) {
    if (!m) return el("p", { class: "muted", text: "no monitoring configured (cortex.yaml: monitoring)" });
    const head = `${m.predictions} predictions read, ${m.unreadable} unreadable` + (m.key ? ` (key ${m.key})` : "");
    if (m.model_type === "classification") {
      return el("div", {}, el("p", { text: head }), table(["class", "count"],
        (m.classes || []).map((c) => el("tr", {}, el("td", { text: c.class }), el("td", { text: c.count })))));
    }
    return el("div", {}, el("p", { text: head }), table(["min", "max", "avg", "p50", "p99"], [el("tr", {},
      [m.min, m.max, m.avg, m.p50, m.p99].map((v) => el("td", { text: fmt(v, 3) })))]));
  }

  function logsPanel(name, replicas) {
    const lines = el("pre", { id: "log-lines" });
    const pick = el("select", { id: "log-replica" }, el("option", { value: "", text: "all replicas (merged)" }),
      replicas.map((r) => el("option", { value: r.id, text: r.id })));
    const follow = el("input", { type: "checkbox", id: "log-follow", checked: "checked" });
    let source = null;
    function open() {
      if (source) source.close();
      lines.replaceChildren();
      const q = new URLSearchParams({ tail: "200", follow: follow.checked ? "1" : "0" });
      if (pick.value) q.set("replica", pick.value);
      source = new EventSource(`/console/apis/${encodeURIComponent(name)}/logs?${q}`);
      // lines come as fast as a predictor prints: batched, one layout per frame
      let pending = [];
      const flush = () => {
        const stick = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
        lines.append(document.createTextNode(pending.join("")));
        pending = [];
        while (lines.childNodes.length > 200) lines.firstChild.remove();
        if (stick) lines.scrollTop = lines.scrollHeight;
      };
      source.onmessage = (m) => {
        if (!pending.length) requestAnimationFrame(flush);
        pending.push(JSON.parse(m.data) + "\n");
        if (pending.length > 2000) pending = pending.slice(-2000);
      };
      source.addEventListener("end", () => source.close());
    }
    pick.addEventListener("change", open); follow.addEventListener("change", open);
    open();
    return el("div", { class: "panel" }, el("div", { class: "row" }, pick, el("label", {}, follow, " follow")), lines);
  }

  function download(b64, type) {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    return URL.createObjectURL(new Blob([bytes], { type: type || "application/octet-stream" }));
  }
  function answerView(a) {
    const body = [];
    if (a.text !== undefined) {
      let shown = a.text;
      try { shown = JSON.stringify(JSON.parse(a.text), null, 2); } catch (e) { /* not JSON: as sent */ }
      body.push(el("pre", { id: "try-body", text: shown }));
    } else {
      body.push(el("a", { id: "try-download", href: download(a.base64, a.content_type), download: "answer.bin",
        text: `download the answer (${a.size} bytes, ${a.content_type || "no content type"})` }));
    }
    if (a.truncated) body.push(el("p", { class: "muted", text: "the answer was cut at 8 MiB" }));
    return el("div", {}, el("p", {}, el("b", { id: "try-status", text: a.status }), ` · ${fmt(a.latency_ms, 2)} ms`),
      table(["header", "value"], a.headers.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v })))), ...body);
  }
  function tryPanel(name) {
    const mode = el("select", { id: "try-mode" }, ["JSON", "text", "file", "file as form data"].map((m) => el("option", { text: m })));
    const text = el("textarea", { id: "try-input", spellcheck: "false" }, "{}");
    const file = el("input", { type: "file", id: "try-file", hidden: true });
    const query = el("input", { type: "text", id: "try-query", placeholder: "query string: key=value&..." });
    const out = el("div", { id: "try-answer" });
    mode.addEventListener("change", () => { const f = mode.value.startsWith("file"); file.hidden = !f; text.hidden = f; });
    async function send() {
      let body, type = null;
      if (mode.value === "JSON") {
        try { JSON.parse(text.value); } catch (e) { out.replaceChildren(el("p", { class: "status-error", text: `not JSON: ${e.message}` })); return; }
        body = text.value; type = "application/json";
      } else if (mode.value === "text") { body = text.value; type = "text/plain; charset=utf-8"; }
      else if (!file.files.length) { out.replaceChildren(el("p", { class: "status-error", text: "choose a file" })); return; }
      else if (mode.value === "file") { body = file.files[0]; type = file.files[0].type || "application/octet-stream"; }
      else { body = new FormData(); body.append("file", file.files[0]); }  // the browser sets its boundary
      const headers = { "X-Cortexd-Token": TOKEN };
      if (type) headers["Content-Type"] = type;
      out.replaceChildren(el("p", { class: "muted", text: "sending..." }));
      const q = query.value.replace(/^\?/, "");
      const r = await fetch(`/console/apis/${encodeURIComponent(name)}/try${q ? "?" + q : ""}`, { method: "POST", headers, body });
      const a = await r.json();
      out.replaceChildren(r.ok ? answerView(a) : el("p", { class: "status-error", text: a.error }));
    }
    return el("div", { class: "panel" }, el("div", { class: "row" }, mode, query,
      el("button", { id: "try-send", onclick: () => send().catch((e) => out.replaceChildren(el("p", { class: "status-error", text: String(e) }))) }, "Send")),
      text, file, out);
  }

  // -- a traffic splitter's page: where its traffic goes now, and what it sent each api -------
  function splitterView(sp) {
    const codes = (r) => `${r["2xx"] || 0} / ${r["4xx"] || 0} / ${r["5xx"] || 0}`;
    return el("div", {},
      el("div", { class: "row" }, el("span", { class: `badge status-${sp.status}`, id: "splitter-status", text: sp.status }),
        el("code", { text: sp.url }), el("span", { class: "muted", text: `defined at ${sp.source}` })),
      table(["api", "weight", "share now", "status", "requested", "p50 ms", "2xx / 4xx / 5xx"], sp.targets.map((t) =>
        el("tr", { "data-target": t.name }, el("td", {}, el("a", { href: apiHref(t.name), text: t.name })),
          el("td", { text: t.shadow ? `${t.weight} (shadow)` : t.weight }),
          el("td", { text: t.shadow ? "copies" : `${fmt(t.share)}%` }),
          el("td", { class: `status-${t.status.split(" ")[0]}` }, t.status, t.down ? el("div", { class: "muted", text: t.down }) : null),
          el("td", { text: t.requests.total || 0 }), el("td", { text: fmt(t.requests.p50_ms) }),
          el("td", { text: codes(t.requests) })))),
      sp.targets.filter((t) => t.shadow && t.dropped).map((t) =>
        el("p", { class: "muted", text: `shadow ${t.name}: ${t.dropped} copies dropped (down or at its concurrency limit)` })),
      sp.refused ? el("p", { class: "status-error", text: `refused: ${sp.refused} request(s) answered 503 (no api could take them)` }) : null,
      sp.notes.map((n) => el("p", { class: "muted", text: n })));
  }
  function renderSplitter(name, sp) {
    const body = el("div", { id: "splitter" }, splitterView(sp));
    main.replaceChildren(el("h1", { text: name }), el("p", { class: "muted" }, "traffic splitter · ", el("a", { href: "/", text: "all APIs" })),
      body);
    live("/console/live", (msg) => {  // the overview's stream: this splitter's row of each snapshot
      const now = (msg.status.splitters || []).find((x) => x.name === name);
      if (now) body.replaceChildren(splitterView(now));
    });
  }

  async function renderAPI(name) {
    const r = await fetch(`/console/apis/${encodeURIComponent(name)}`);
    const data = await r.json();
    if (!r.ok) { main.replaceChildren(el("h1", { text: name }), el("p", { class: "status-error", text: data.error })); return; }
    if (data.splitter) { renderSplitter(name, data.splitter); return; }
    let a = data.api;
    const h = EMPTY(); appendHistory(h, data.history || EMPTY());
    const charts = [
      new Chart("rps", "requests/s", [{ key: "rps_2xx", label: "2xx", color: "#1a7f37" }, { key: "rps_4xx", label: "4xx", color: "#9a6700" },
        { key: "rps_5xx", label: "5xx", color: "#cf222e" }], "req/s", true),
      new Chart("latency", "latency", [{ key: "p50_ms", label: "p50", color: "#0969da" }, { key: "p99_ms", label: "p99", color: "#8250df" }], "ms"),
      new Chart("inflight", "in flight", [{ key: "in_flight", label: "in flight", color: "#bc4c00", digits: 0 }], "requests"),
      new Chart("replicas", "replicas", [{ key: "requested", label: "requested", color: "#8c959f", digits: 0 },
        { key: "ready", label: "ready", color: "#1a7f37", digits: 0 }, { key: "starting", label: "starting", color: "#9a6700", digits: 0 }], "replicas"),
    ];
    const head = el("div", {}, summary(a)), marks = el("ul", { class: "marks", id: "marks" });
    const replicas = el("div", {}, replicasTable(a, data.models || {})), monitoring = el("div", {}, monitoringView(a.requests.monitoring));
    main.replaceChildren(el("h1", { text: name }), head,
      el("p", {}, el("a", { href: data.openapi, id: "openapi-link", text: "OpenAPI 3.1 document" }), " · ", el("a", { href: "/", text: "all APIs" })),
      el("div", { class: "charts" }, charts.map((c) => c.node)),
      el("h2", { text: "Autoscaler decisions, rollouts, reloads, crashes" }), marks,
      el("h2", { text: "Replicas" }), replicas,
      el("div", { class: "two" }, el("div", {}, el("h2", { text: "Try it" }), tryPanel(name)),
        el("div", {}, el("h2", { text: "Logs" }), logsPanel(name, a.replica_list))),
      el("h2", { text: "Monitoring" }), monitoring,
      el("h2", { text: "Configuration" }), el("p", { class: "muted", text: `as loaded, defined at ${data.config.source}` }),
      el("pre", { id: "config", text: JSON.stringify(data.config.document, null, 2) }));
    const redraw = () => {
      charts.forEach((c) => c.draw(h));
      marks.replaceChildren(...h.marks.slice().reverse().map((m) => el("li", { class: `mark-${m.kind}`, "data-kind": m.kind },
        el("span", { class: "muted", text: `${clock(m.at)} ${m.kind}: ` }), m.message)));
    };
    redraw();
    window.addEventListener("resize", redraw);
    const after = h.t.length ? h.t[h.t.length - 1] : 0;
    live(`/console/live?api=${encodeURIComponent(name)}&after=${after}`, (msg) => {
      if (msg.api) {
        a = msg.api;
        head.replaceChildren(summary(a));
        replicas.replaceChildren(replicasTable(a, data.models || {}));
        monitoring.replaceChildren(monitoringView(a.requests.monitoring));
      }
      if (msg.history) appendHistory(h, msg.history);
      redraw();
    });
  }

  const path = window.location.pathname;
  if (path.startsWith("/apis/")) {
    renderAPI(decodeURIComponent(path.slice("/apis/".length))).catch((e) => main.replaceChildren(el("p", { class: "status-error", text: String(e) })));
    fetch("/console/status").then((r) => r.json()).then((s) => showDaemon(s.daemon)).catch(() => {});
  } else {
    // the first view from one fetch, then each second's from the stream
    fetch("/console/status").then((r) => r.json()).then(renderOverview).catch(() => {});
    live("/console/live", (msg) => renderOverview(msg.status));
  }
})();
