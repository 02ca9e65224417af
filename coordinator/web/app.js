// dcroll dashboard: renders DashboardView snapshots (coordinator/dashboard.go)
// from the inline snapshot and then from the api/events stream. No build
// step, no dependencies.
//
// Stream events: "snapshot" (a new view), "heartbeat" (the view is still
// current), "stale" (the server cannot read ZooKeeper: keep the last view,
// greyed, with since when). If the stream itself drops, EventSource
// reconnects; a watchdog reopens it when even heartbeats stop.
"use strict";

(function () {
  const HEARTBEAT_DEADLINE = 15000; // 3x the server's heartbeat interval
  const TIP_MAX = 200;              // characters of a "why" in a tile's tooltip

  const state = {
    view: null,          // the last DashboardView
    fresh: null,         // Date the view was last known current
    stale: null,         // {error, since} while stale, else null
    service: null,       // the service shown on the rack map, null: follow the queue
    sticky: false,       // the operator picked a service tab
    es: null,
    lastEvent: 0,
    snapshots: 0,
  };
  window.__dcroll = state; // for tests and curious operators

  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const cut = (s, n) => (s && s.length > n ? s.slice(0, n - 1) + "…" : s || "");
  const short = (id) => (id || "").slice(0, 12);
  const plural = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

  function parseTime(t) {
    if (!t) return null;
    const d = new Date(t);
    return isNaN(d) || d.getFullYear() < 2000 ? null : d;
  }
  function clock(d) {
    return d ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }) : "";
  }
  function dur(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + "m" + (s ? String(s).padStart(2, "0") + "s" : "");
    const h = Math.floor(m / 60); m %= 60;
    return h + "h" + String(m).padStart(2, "0") + "m";
  }
  // rel renders a time that stays current: tick() rewrites every .rel.
  function rel(t, mode) {
    const d = parseTime(t);
    if (!d) return "";
    return `<span class="rel" data-t="${d.getTime()}" data-mode="${mode || "ago"}">${esc(relText(d.getTime(), mode || "ago"))}</span>`;
  }
  function relText(ms, mode) {
    const delta = ms - Date.now();
    if (mode === "in") return delta > 0 ? "in " + dur(delta) : "overdue by " + dur(-delta);
    return dur(-delta) + " ago";
  }
  function tick() {
    for (const el of document.querySelectorAll(".rel")) el.textContent = relText(+el.dataset.t, el.dataset.mode);
    renderConn();
  }

  // ---- the stream ------------------------------------------------------

  function connect() {
    if (state.es) state.es.close();
    const es = new EventSource("api/events");
    state.es = es;
    state.lastEvent = Date.now();
    es.addEventListener("snapshot", (e) => {
      state.lastEvent = Date.now();
      try { state.view = JSON.parse(e.data); } catch (err) { console.error("bad snapshot", err); return; }
      state.snapshots++;
      state.fresh = new Date();
      state.stale = null;
      render();
    });
    es.addEventListener("heartbeat", () => {
      state.lastEvent = Date.now();
      state.fresh = new Date();
      if (state.stale) { state.stale = null; renderStale(); }
      renderConn();
    });
    es.addEventListener("stale", (e) => {
      state.lastEvent = Date.now();
      let d = {};
      try { d = JSON.parse(e.data); } catch (err) { d = { error: "unreadable stale event" }; }
      state.stale = { error: d.error || "ZooKeeper unreachable", since: parseTime(d.since) || new Date(), server: true };
      renderStale();
    });
    es.onerror = () => {
      // The server is gone (coordinator restarting, network): show it,
      // and reconnect ourselves if EventSource gave up (a non-stream answer).
      if (!state.stale || state.stale.server) state.stale = { error: "dashboard server unreachable: reconnecting", since: new Date(), server: false };
      renderStale();
      if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (state.es === es) connect(); }, 2000);
    };
  }

  // The stream sends at least a heartbeat every 5s; silence means a dead
  // connection EventSource has not noticed (a proxy holding it open).
  setInterval(() => {
    if (state.es && Date.now() - state.lastEvent > HEARTBEAT_DEADLINE) {
      state.stale = state.stale || { error: "no word from the dashboard server: reconnecting", since: new Date(state.lastEvent), server: false };
      renderStale();
      connect();
    }
    tick();
  }, 1000);

  // ---- rendering -------------------------------------------------------

  function render() {
    const v = state.view;
    if (!v) return;
    document.body.classList.remove("connecting");
    const st = v.status || {};
    $("root").textContent = v.root && v.root !== "/dc" ? v.root : "";
    const h = st.head;
    $("head").innerHTML = h
      ? `HEAD <code>${esc(short(h.spec_id))}</code> <b>${esc(h.name)}</b> <span class="muted">${esc(h.action)} by ${esc(h.by)}, ${rel(h.at)}</span>`
      : `<span class="muted">no spec pushed yet</span>`;
    renderNight(v);
    renderHalt(v);
    renderPause(st.control);
    renderQueue(v);
    renderFleet(v);
    renderDownloads(v.downloads || []);
    renderHistory(v);
    renderAgents(v.agents || []);
    renderStale();
  }

  function renderNight(v) {
    const r = v.rollout;
    const stateEl = $("night-state"), etaEl = $("night-eta");
    if (!r) {
      stateEl.innerHTML = "";
      etaEl.innerHTML = `<span class="muted">no ETA yet</span>`;
      return;
    }
    // The queue is the truth about a halt; the record may lag a tick.
    const st = v.halt ? "halted" : r.state;
    stateEl.innerHTML = `night <span class="badge st-${esc(nightClass(st))}">${esc(st)}</span>`;
    const eta = parseTime(r.eta);
    if (v.halt) {
      etaEl.innerHTML = `<span class="bad">no ETA: halted (${esc(v.halt.service)})</span>`;
    } else if (eta) {
      etaEl.innerHTML = `ETA <b>${esc(clock(eta))}</b> (${rel(r.eta, "in")}) <span class="muted">· ${r.remaining} step${r.remaining === 1 ? "" : "s"} left · record ${rel(r.at)}</span>`;
    } else if (r.state === "done" || r.state === "idle") {
      etaEl.innerHTML = `<span class="muted">nothing left to roll</span>`;
    } else if (r.state === "halted") {
      etaEl.innerHTML = `<span class="bad">no ETA: halted</span>`;
    } else {
      etaEl.innerHTML = `<span class="muted">no ETA yet</span>`;
    }
  }
  function nightClass(s) {
    return { rolling: "rolling", done: "done", idle: "done", halted: "halted", blocked: "pending" }[s] || "pending";
  }

  function renderHalt(v) {
    const el = $("halt-banner"), x = v.halt;
    if (!x) { el.hidden = true; el.innerHTML = ""; return; }
    const rb = v.rollback;
    el.hidden = false;
    el.innerHTML = `<b>HALTED</b>: ${esc(x.service)} ${esc(x.version)}${x.machine ? " on " + esc(x.machine) : ""}${x.since ? " · " + rel(x.since) : ""}
      <div class="reason" title="${esc(x.reason)}">${esc(x.reason)}${x.truncated ? ' <span class="muted">(truncated; full reason: dcroll status)</span>' : ""}</div>
      <div>Next, either:</div>
      <ul class="cmds">
        <li><code>${esc(x.resume)}</code> — retry ${esc(x.service)} ${esc(x.version)} once the cause is fixed (trusts its build again)</li>
        ${x.rollback_cmd ? `<li><code>${esc(x.rollback_cmd)}</code> — move HEAD back to ${esc(rb.short)}${rb.name ? " (" + esc(rb.name) + ")" : ""}, the previous spec</li>` : `<li class="muted">no previous spec to roll back to: push a fixed spec</li>`}
      </ul>`;
  }

  function renderPause(c) {
    const el = $("pause-banner");
    if (!c || !c.paused) { el.hidden = true; el.innerHTML = ""; return; }
    el.hidden = false;
    el.innerHTML = `<b>PAUSED</b> by ${esc(c.by || "?")}${c.reason ? ": " + esc(c.reason) : ""} ${c.at ? "· " + rel(c.at) : ""}
      <div>No machine starts a step until <code>${esc(cmd(state.view, "resume"))}</code>.</div>`;
  }
  function cmd(v, what) {
    return "dcroll" + (v && v.root && v.root !== "/dc" ? " --root " + v.root : "") + " " + what;
  }

  function recordFor(v, q, i) {
    const ss = (v.rollout && v.rollout.services) || [];
    return ss.find((s) => s.entry && s.entry === q.node) || ss.find((s) => s.service === q.service && s.position === i + 1) || null;
  }

  function renderQueue(v) {
    const q = (v.status && v.status.queue) || [];
    if (!q.length) { $("queue").innerHTML = `<div class="muted">empty: nothing to roll</div>`; return; }
    const svcs = {};
    for (const s of (v.status.services || [])) svcs[s.service] = s;
    const rows = q.map((e, i) => {
      const r = recordFor(v, e, i);
      const s = svcs[e.service];
      // Progress: the record's when there is one, else count the members
      // that run the target and are available.
      let done = 0, total = 0, avail = "";
      if (r && r.members > 0) { // a record of a finished entry may leave the counts out
        done = r.done; total = r.members;
        avail = `${r.available}/${r.members} available, min ${r.quorum_min}`;
      } else if (s) {
        total = s.total;
        done = (s.members || []).filter((m) => m.version === e.version && m.available).length;
        avail = `${s.available}/${s.total} available, min ${s.quorum}`;
      }
      if (e.state === "done" && total) done = total;
      const pct = total ? Math.round((done * 100) / total) : 0;
      let blocked = "";
      if (e.state === "halted") blocked = `<span class="bad">halted${e.machine ? " on " + esc(e.machine) : ""}</span>`;
      else if (r && r.blocked_by) blocked = `<span class="blocked">${esc(r.blocked_by)}</span>`;
      if (r && r.canary) blocked += (blocked ? "<br>" : "") + canaryText(r.canary);
      let eta = `<span class="muted">—</span>`;
      if (e.state === "done") eta = `<span class="muted">done</span>`;
      else if (e.state === "halted") eta = `<span class="bad">halted</span>`;
      else if (r && parseTime(r.eta)) eta = `${esc(clock(parseTime(r.eta)))} <span class="muted">(${rel(r.eta, "in")})</span>`;
      else if (!v.rollout) eta = `<span class="muted">no ETA yet</span>`;
      const step = r && r.step_seconds && e.state !== "done" ? `<div class="muted">${r.step_seconds < 10 ? r.step_seconds.toFixed(1) + "s" : dur(r.step_seconds * 1000)}/step${r.measured ? " measured" : " est."}${r.batches ? ` · ${r.batches} batch${r.batches === 1 ? "" : "es"} left` : ""}</div>` : "";
      return `<tr data-service="${esc(e.service)}" data-state="${esc(e.state)}">
        <td class="num">${i + 1}</td><td><b>${esc(e.service)}</b></td>
        <td>${esc(e.from_version || (r && r.from) || "—")} → ${esc(e.version || "(removed)")} <span class="muted">${esc(e.kind)}</span></td>
        <td><span class="badge st-${esc(e.state)}">${esc(e.state)}</span></td>
        <td><span class="bar"><span style="width:${pct}%"></span></span>${done}/${total}<div class="muted">${esc(avail)}</div></td>
        <td class="blocked-by">${blocked}${step}</td><td class="eta">${eta}</td></tr>`;
    });
    $("queue").innerHTML = `<table><thead><tr><th>#</th><th>service</th><th>change</th><th>state</th><th>progress</th><th>blocked by</th><th>ETA</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }
  function canaryText(c) {
    if (c.promoted) return `<span class="muted">canary promoted${c.by ? " by " + esc(c.by) : ""}</span>`;
    let t = `canary ${c.done}/${c.machines} healthy`;
    const until = parseTime(c.bake_until);
    if (until) t += ` · baking until ${esc(clock(until))} (${rel(c.bake_until, "in")})`;
    return `<span class="canary">${t}</span>`;
  }

  // ---- the rack map ----------------------------------------------------

  const PALETTE = ["#7c3aed", "#0d9488", "#db2777", "#ca8a04", "#0891b2", "#65a30d", "#9333ea", "#c2410c"];
  const TARGET = "#2563eb", PREVIOUS = "#9ca3af";

  function versionColors(v, s) {
    const colors = {};
    // The version being replaced is grey: the night record's, the queue
    // entry's, or else the most common one that is not the target.
    const q = ((v.status && v.status.queue) || []).filter((e) => e.service === s.service);
    const rec = ((v.rollout && v.rollout.services) || []).find((r) => r.service === s.service);
    const counts = {};
    for (const m of s.members || []) counts[m.version || ""] = (counts[m.version || ""] || 0) + 1;
    const common = Object.keys(counts).filter((x) => x && x !== s.target_version).sort((a, b) => counts[b] - counts[a])[0] || "";
    const from = (rec && rec.from) || (q.length && q[q.length - 1].from_version) || common;
    const versions = Object.keys(counts).sort(natural);
    let i = 0;
    for (const ver of versions) {
      if (ver === s.target_version) colors[ver] = TARGET;
      else if (ver === from || ver === "") colors[ver] = PREVIOUS;
      else colors[ver] = PALETTE[i++ % PALETTE.length];
    }
    return colors;
  }
  function tileClass(m) {
    if (m.available) return "s-available";
    if (m.state === "absent") return "s-absent";
    if (["mid-step", "upgrading", "reverting", "staging"].includes(m.state)) return "s-mid-step";
    if (["unhealthy", "failed", "starting", "stopped"].includes(m.state)) return "s-" + m.state;
    return "s-other";
  }
  const natural = (a, b) => a.localeCompare(b, undefined, { numeric: true });

  function pickService(v) {
    const services = (v.status && v.status.services) || [];
    if (state.sticky && services.some((s) => s.service === state.service)) return state.service;
    const active = ((v.status && v.status.queue) || []).find((e) => e.state !== "done");
    if (active && services.some((s) => s.service === active.service)) return active.service;
    return services.length ? services[0].service : null;
  }

  function renderFleet(v) {
    const services = (v.status && v.status.services) || [];
    const name = pickService(v);
    state.service = name;
    $("svc-tabs").innerHTML = services.map((s) => {
      const onTarget = (s.members || []).filter((m) => m.version === s.target_version).length;
      const note = s.target_version ? `${onTarget}/${s.total} on ${esc(s.target_version)}` : plural(s.total, "machine");
      return `<button role="tab" data-service="${esc(s.service)}" aria-selected="${s.service === name}">${esc(s.service)} <span class="muted">${note}</span></button>`;
    }).join("");
    const s = services.find((x) => x.service === name);
    if (!s) { $("fleet").innerHTML = `<div class="muted">no members yet</div>`; $("legend").innerHTML = ""; $("fleet-summary").textContent = ""; return; }
    const colors = versionColors(v, s);
    const members = s.members || [];
    const counts = {};
    for (const m of members) counts[m.version || ""] = (counts[m.version || ""] || 0) + 1;
    const unavailable = members.filter((m) => !m.available).length;
    $("fleet-summary").textContent = `${name}: ${plural(members.length, "machine")}, ${s.available} available (quorum ${s.quorum})${unavailable ? `, ${unavailable} not available` : ""}`;
    $("legend").innerHTML =
      Object.keys(colors).sort(natural).map((ver) =>
        `<span class="lg-version" data-version="${esc(ver)}"><span class="sw" style="background:${colors[ver]}"></span>${esc(ver || "unknown")}${ver === s.target_version ? " (target)" : ""} ×${counts[ver] || 0}</span>`).join("") +
      `<span><span class="sw" style="border:2px solid #f59e0b"></span>mid-step</span>` +
      `<span><span class="sw" style="border:2px solid var(--bad);background:repeating-linear-gradient(45deg,#9ca3af 0 3px,#fff 3px 5px)"></span>unhealthy / failed</span>` +
      `<span><span class="sw" style="border:2px dashed #9ca3af"></span>absent</span>`;
    // Group by data center, then rack.
    const dcs = new Map();
    for (const m of members) {
      const dc = m.dc || "?", rack = m.rack || "?";
      if (!dcs.has(dc)) dcs.set(dc, new Map());
      const racks = dcs.get(dc);
      if (!racks.has(rack)) racks.set(rack, []);
      racks.get(rack).push(m);
    }
    let html = "";
    for (const dc of [...dcs.keys()].sort(natural)) {
      const racks = dcs.get(dc);
      html += `<div class="dc" data-dc="${esc(dc)}"><h3>${esc(dc)} <span class="muted">${plural([...racks.values()].reduce((n, r) => n + r.length, 0), "machine")}, ${plural(racks.size, "rack")}</span></h3><div class="racks">`;
      for (const rack of [...racks.keys()].sort(natural)) {
        const ms = racks.get(rack).sort((a, b) => natural(a.machine, b.machine));
        const bad = ms.filter((m) => !m.available).length;
        html += `<div class="rack" data-rack="${esc(rack)}"><div class="rl">${esc(rack)} · ${ms.length}${bad ? ` · <span class="bad">${bad} down</span>` : ""}</div><div class="tiles" style="--cols:${Math.min(20, ms.length)}">`;
        for (const m of ms) {
          const why = m.why || m.detail ? "\n" + cut([m.why, m.detail].filter(Boolean).join(": "), TIP_MAX) : "";
          const tip = `${m.machine} (${dc}/${rack})\n${name} ${m.version || "?"}: ${m.state}${why}`;
          html += `<span class="tile ${tileClass(m)}" style="--v:${colors[m.version || ""]}" data-machine="${esc(m.machine)}" data-version="${esc(m.version)}" data-state="${esc(m.state)}" title="${esc(tip)}"></span>`;
        }
        html += `</div></div>`;
      }
      html += `</div></div>`;
    }
    $("fleet").innerHTML = html;
  }

  // ---- downloads, history, agents -------------------------------------

  function renderDownloads(ds) {
    $("downloads-section").hidden = ds.length === 0;
    if (!ds.length) { $("downloads").innerHTML = ""; return; }
    $("downloads").innerHTML = `<table><thead><tr><th>machine</th><th>blob</th><th>progress</th><th>rate</th><th>source</th><th>peers</th></tr></thead><tbody>` +
      ds.map((d) => `<tr><td>${esc(d.machine)}</td><td><code>${esc(d.blob)}</code></td><td><span class="bar"><span style="width:${d.percent}%"></span></span>${esc(d.bytes)} / ${esc(d.total)} (${d.percent}%)${d.error ? `<div class="bad">${esc(cut(d.error, 200))}</div>` : ""}</td><td>${esc(d.rate)}</td><td>${esc(d.source)}</td><td>${d.peers}</td></tr>`).join("") +
      `</tbody></table>`;
  }

  function renderHistory(v) {
    const hs = v.history || [];
    $("history-count").textContent = hs.length < v.history_total ? `(latest ${hs.length} of ${v.history_total})` : "";
    if (!hs.length) { $("history").innerHTML = `<div class="muted">no HEAD move yet</div>`; return; }
    const head = v.status && v.status.head ? v.status.head.spec_id : "";
    const target = v.rollback ? v.rollback.id : "";
    let headSeen = false, targetSeen = false;
    const rows = hs.map((e) => {
      let mark = "";
      if (e.to === head && !headSeen) { headSeen = true; mark = `<span class="hist-mark">HEAD</span>`; }
      else if (e.to === target && !targetSeen) { targetSeen = true; mark = `<span class="hist-mark">← <code>${esc(cmd(v, "rollback"))}</code> target</span>`; }
      const o = e.outcome || "";
      const notes = [];
      if (e.outcome_service) notes.push(esc(e.outcome_service));
      if (e.superseded) notes.push("superseded an unfinished rollout");
      for (const f of e.forced || []) notes.push("forced past bad " + esc(f));
      return `<tr data-to="${esc(e.to)}"><td>${esc(clock(parseTime(e.at)))} <span class="muted">${rel(e.at)}</span></td><td>${esc(e.action)}</td><td><code>${esc(short(e.to))}</code> ${esc(e.name)} ${mark}</td><td>${esc(e.by)}</td><td><span class="badge o-${esc(o.replace(/ /g, "-"))}">${esc(o)}</span> <span class="muted">${notes.join("; ")}</span></td></tr>`;
    });
    $("history").innerHTML = `<table><thead><tr><th>when</th><th>action</th><th>spec</th><th>by</th><th>outcome</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  function renderAgents(as) {
    let total = 0, max = null;
    for (const a of as) { total += a.locked_bytes; if (!max || a.locked_bytes > max.locked_bytes) max = a; }
    $("agents-summary").textContent = as.length
      ? `${as.length} registered · mlocked ${human(total)} in all${max && max.locked_bytes ? `, most on ${max.machine} (${max.locked})` : ""}`
      : "none registered";
    // A thousand agents are a thousand rows: build the table only when opened.
    const det = $("agents-details");
    const fill = () => {
      $("agents").innerHTML = `<table><thead><tr><th>machine</th><th>dc/rack</th><th>services</th><th>peer</th><th>mlocked</th></tr></thead><tbody>` +
        as.map((a) => `<tr><td>${esc(a.machine)}</td><td>${esc(a.dc)}/${esc(a.rack)}</td><td>${esc((a.services || []).join(" "))}</td><td>${esc(a.peer_addr)}</td><td>${esc(a.locked)}</td></tr>`).join("") + `</tbody></table>`;
    };
    det.ontoggle = () => { if (det.open) fill(); else $("agents").innerHTML = ""; };
    if (det.open) fill();
  }
  function human(n) { // as humanBytes in dashboard.go
    if (Math.abs(n) < 1024) return n + " B";
    let f = n;
    for (const u of ["KiB", "MiB", "GiB", "TiB"]) {
      f /= 1024;
      if (Math.abs(f) < 1024 || u === "TiB") return (Math.abs(f) < 100 ? f.toFixed(1) : f.toFixed(0)) + " " + u;
    }
  }

  // ---- freshness -------------------------------------------------------

  function renderStale() {
    const el = $("stale-banner"), s = state.stale;
    document.body.classList.toggle("stale", !!s);
    if (!s) { el.hidden = true; el.innerHTML = ""; renderConn(); return; }
    el.hidden = false;
    el.innerHTML = `<b>Stale since ${esc(clock(s.since))}</b> (${rel(s.since.toISOString())}): ${esc(s.error)}.
      ${state.view ? "Showing the last data read" + (state.fresh ? ` at ${esc(clock(state.fresh))}` : "") + "; " : ""}this page recovers by itself.`;
    renderConn();
  }
  function renderConn() {
    // The browser tab's title tells a halt or stale data from across the room.
    const v = state.view;
    document.title = (state.stale ? "stale · " : "") + (v && v.halt ? "HALTED · " : v && v.status && v.status.control && v.status.control.paused ? "paused · " : "") + "dcroll data center";
    const el = $("conn");
    if (state.stale) el.textContent = "stale " + dur(Date.now() - state.stale.since.getTime());
    else if (state.fresh) el.textContent = "live · " + clock(state.fresh);
    else el.textContent = "connecting…";
  }

  document.addEventListener("click", (e) => {
    const b = e.target.closest("#svc-tabs button[data-service]");
    if (!b) return;
    state.service = b.dataset.service;
    state.sticky = true;
    history.replaceState(null, "", "#service=" + encodeURIComponent(state.service));
    if (state.view) renderFleet(state.view);
  });

  function start() {
    const m = /service=([^&]+)/.exec(location.hash);
    if (m) { state.service = decodeURIComponent(m[1]); state.sticky = true; }
    const initial = document.getElementById("initial");
    if (initial) {
      try {
        state.view = JSON.parse(initial.textContent);
        state.fresh = new Date();
        render();
      } catch (err) { console.error("bad inline snapshot", err); }
    }
    connect();
  }
  start();
})();
