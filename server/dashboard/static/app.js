// The asyncfl operator dashboard. Every figure comes from the admin API, called with the
// admin token the operator signed in with; the token lives in sessionStorage (this tab
// only) and never in a URL. Any 401 clears it and shows the sign-in form again.
//
// A task page reads /live once (its history), then follows the task's live snapshots
// over one server-sent-event stream, read with fetch() so that it carries the token in
// the Authorization header like every other call (EventSource cannot send headers). The
// server pushes a snapshot only when something changed, at most once a second. Where a
// proxy blocks or buffers the stream, the page polls /snapshot with its ETag instead.
import { barChart, lineChart } from "./charts.js";

const TOKEN_KEY = "asyncfl.admin_token";
const POLL_MS = 1000; // an open page asks at most once a second
const HIDDEN_POLL_MS = 5000; // ...and every 5 s while its tab is hidden
const RESEND_S = 180; // the server re-reads this much of the timeline on every poll
const HISTORY_S = 3600; // the timelines show the last hour
const FIRST_BYTE_MS = 5000; // a stream silent this long from its start is buffered
const SILENT_MS = 40000; // the server sends a keepalive every 15 s: silence = dead
const STREAM_TRIES = 3; // streams that fail in a row before the page polls instead
const POLL_SPELL_MS = 60000; // ...for this long, then it tries a stream again
const $ = (id) => document.getElementById(id);

class AuthError extends Error {}

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let generation = 0; // bumps when the view changes: stale poll loops stop

async function api(path, method = "GET", { accept = "application/json", headers = {}, signal } = {}) {
  if (!token) throw new AuthError("not signed in");
  const resp = await fetch(path, {
    method,
    cache: "no-store",
    signal,
    headers: { Authorization: `Bearer ${token}`, Accept: accept, ...headers },
  });
  if (resp.status === 401) throw new AuthError("the admin token was refused");
  if (!resp.ok && resp.status !== 304) {
    let message = `${resp.status} ${resp.statusText}`;
    try { message = (await resp.json()).error.message; } catch { /* not our error shape */ }
    throw new Error(message);
  }
  return resp;
}

const json = async (path, method) => (await api(path, method)).json();

function show(view) {
  for (const id of ["signin", "overview", "task"]) $(id).hidden = id !== view;
  $("nav").hidden = view === "signin";
}

function signOut(message = "") {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  generation += 1;
  if (page) page.stop();
  show("signin");
  $("signin-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

function failed(err, where) {
  if (err instanceof AuthError) return signOut(token ? err.message : "");
  where.textContent = String(err.message || err);
}

// -- formatting --------------------------------------------------------------------------
const num = (v, digits = 3) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%");
const int = (v) => (v === null || v === undefined ? "-" : Math.round(v).toLocaleString("en"));
const mb = (v) => (v ? (v / 2 ** 20).toFixed(2) : "0");
function energy(j) {
  if (j >= 3.6e4) return `${(j / 3.6e6).toPrecision(3)} kWh`;
  if (j >= 3600) return `${(j / 3600).toPrecision(3)} Wh`;
  return `${sig(j)} J`;
}
const sig = (v) => (v === null || v === undefined ? "-" : v === 0 ? "0" : Math.abs(v) >= 100 ? Math.round(v).toLocaleString("en") : v.toPrecision(3));
function cell(row, text, cls = "n") {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
const STATES = { running: "running", paused: "paused", budget_reached: "budget reached" };

// -- sign-in -------------------------------------------------------------------------------
$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("signin-error").textContent = "";
  try {
    await api("/admin/v1/overview");
  } catch (err) {
    token = "";
    $("signin-error").textContent = err instanceof AuthError ? "That token was refused." : String(err.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  route();
});
$("signout").addEventListener("click", () => signOut());

// -- overview --------------------------------------------------------------------------------
async function overview(gen) {
  show("overview");
  while (gen === generation) {
    try {
      const doc = await json("/admin/v1/overview");
      if (gen !== generation) return;
      const body = $("tasks").tBodies[0];
      body.replaceChildren();
      for (const t of doc.tasks) {
        const row = body.insertRow();
        row.dataset.task = t.id;
        const link = document.createElement("a");
        link.href = `#/tasks/${encodeURIComponent(t.id)}`;
        link.textContent = t.id;
        cell(row, "", "").appendChild(link);
        cell(row, t.model, "");
        cell(row, t.mode, "");
        cell(row, STATES[t.state] || t.state, `state ${t.state}`);
        cell(row, int(t.version));
        cell(row, `${int(t.active_sessions)} / ${int(t.concurrency)}`);
        cell(row, num(t.updates_per_s, 1));
        cell(row, pct(t.accuracy));
        cell(row, pct(t.federated_accuracy));
      }
      $("no-tasks").hidden = doc.tasks.length > 0;
    } catch (err) {
      if (err instanceof AuthError) return signOut(err.message);
    }
    await sleep(2 * POLL_MS);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, document.hidden ? Math.max(ms, HIDDEN_POLL_MS) : ms));
}

// -- one task ----------------------------------------------------------------------------------
class TaskPage {
  constructor(id) {
    this.id = id;
    this.versions = new Map();
    this.buckets = new Map();
    this.lag = [];
    this.lastVersion = -1;
    this.since = Math.floor(Date.now() / 1000) - HISTORY_S;
    this.painted = false;
    this.state = "";
    this.latest = null; // the newest document, rendered when the tab shows
    this.updates = 0;
    this.abort = null; // stops the open stream
  }

  stop() {
    if (this.abort) this.abort.abort();
  }

  // A snapshot carries the newest versions only: one after a gap needs /live first.
  missed(doc) {
    return this.lastVersion >= 0 && doc.versions.length > 0 && doc.versions[0].version > this.lastVersion + 1;
  }

  apply(doc, transport) {
    this.merge(doc);
    this.latest = doc;
    if (transport) {
      this.updates += 1;
      $("task").dataset.updates = String(this.updates);
      $("task").dataset.transport = transport;
    }
    if (!document.hidden) this.render(doc);
    $("task-error").textContent = "";
  }

  async catchUp(gen) {
    const doc = await json(this.query());
    if (gen === generation) this.apply(doc, null);
  }

  query() {
    const q = new URLSearchParams({ since: String(Math.max(0, this.since)), bucket_s: "10" });
    if (this.lastVersion >= 0) q.set("after_version", String(this.lastVersion));
    return `/admin/v1/tasks/${encodeURIComponent(this.id)}/live?${q}`;
  }

  merge(doc) {
    for (const v of doc.versions) this.versions.set(v.version, v);
    if (doc.versions.length) this.lastVersion = Math.max(this.lastVersion, doc.versions.at(-1).version);
    for (const b of doc.timeline.buckets) this.buckets.set(b.t, b);
    const newest = Math.max(0, ...this.buckets.keys());
    if (newest) this.since = newest - RESEND_S;
    const oldest = doc.now - HISTORY_S;
    for (const t of this.buckets.keys()) if (t < oldest) this.buckets.delete(t);
    this.lag.push([doc.now, doc.summary.commit_lag]);
    if (this.lag.length > 600) this.lag.shift();
  }

  render(doc) {
    const s = doc.summary;
    this.state = s.state;
    $("task-title").textContent = `${s.id} (${s.model}, ${s.mode})`;
    const state = $("task-state");
    state.textContent = STATES[s.state] || s.state;
    state.className = `state ${s.state}`;
    $("pause").disabled = s.state !== "running";
    $("resume").disabled = s.state !== "paused";
    $("dl-version").placeholder = `latest (${s.version})`;
    $("dl-version").max = String(s.version);
    $("c-version").textContent = int(s.version);
    $("c-sessions").textContent = `${int(s.active_sessions)} / ${int(s.concurrency)}`;
    $("c-rate").textContent = num(s.updates_per_s, 1);
    $("c-lag").textContent = int(s.commit_lag);
    $("c-accuracy").textContent = s.accuracy === null ? "-" : `${pct(s.accuracy)} (v${s.accuracy_version})`;
    const checkins = doc.timeline.checkins;
    $("c-checkins").textContent = `${int(checkins.admitted)} / ${int(checkins.turned_away)}`;
    const total = doc.cost.total;
    $("c-energy").textContent = energy(total.energy_j);
    $("c-co2e").textContent = `${sig(total.co2e_g)} g`;
    $("c-bytes").textContent = `${mb(total.bytes_up)} / ${mb(total.bytes_down)} MB`;
    // Privacy (the differential-privacy issue): shown once the status has the field.
    const privacy = s.privacy;
    $("privacy").hidden = !privacy;
    if (privacy) $("c-epsilon").textContent = `${num(privacy.epsilon, 2)} / ${num(privacy.epsilon_budget, 2)}`;

    const versions = [...this.versions.values()].sort((a, b) => a.version - b.version);
    const series = (pick) => versions.map((v) => [v.version, pick(v)]).filter(([, y]) => y !== null && y !== undefined);
    lineChart($("chart-accuracy"), [
      { name: "held-out", points: series((v) => v.heldout && v.heldout.accuracy) },
      { name: "federated", points: series((v) => v.federated && v.federated.accuracy) },
    ], { yMin: 0, yMax: 1 });
    lineChart($("chart-loss"), [
      { name: "held-out", points: series((v) => v.heldout && v.heldout.loss) },
      { name: "federated", points: series((v) => v.federated && v.federated.loss) },
    ]);
    lineChart($("chart-gap"), [{ name: "gap", points: series((v) => v.gap && v.gap.gap) }], {
      yMin: 0, emptyText: "needs federated evaluations from two tiers",
    });
    lineChart($("chart-energy"), [{ name: "energy (J)", points: series((v) => (v.version > 0 ? v.cost.energy_j : null)) }], { yMin: 0 });

    const buckets = [...this.buckets.values()].sort((a, b) => a.t - b.t);
    const reasons = [...new Set(buckets.flatMap((b) => Object.keys(b.rejected)))].sort().slice(0, 4);
    lineChart($("chart-updates"), [
      { name: "accepted", points: buckets.map((b) => [b.t, b.accepted]) },
      { name: "applied", points: buckets.map((b) => [b.t, b.applied]) },
      ...reasons.map((r) => ({ name: `rejected: ${r}`, points: buckets.map((b) => [b.t, b.rejected[r] || 0]) })),
    ], { time: true, yMin: 0 });
    const away = [...new Set(buckets.flatMap((b) => Object.keys(b.turned_away)))].sort();
    lineChart($("chart-checkins"), [
      { name: "admitted", points: buckets.map((b) => [b.t, b.admitted]) },
      ...away.map((r) => ({ name: `turned away: ${r}`, points: buckets.map((b) => [b.t, b.turned_away[r] || 0]) })),
    ], { time: true, yMin: 0 });
    barChart($("chart-staleness"), doc.timeline.staleness.map((h) => ({ label: String(h.staleness), value: h.count })), { xLabel: "staleness (versions)" });
    lineChart($("chart-lag"), [{ name: "commit lag", points: this.lag }], { time: true, yMin: 0 });

    const body = $("tiers").tBodies[0];
    body.replaceChildren();
    for (const t of doc.tiers) {
      const row = body.insertRow();
      row.dataset.tier = t.tier;
      cell(row, t.tier, "");
      cell(row, int(t.devices));
      cell(row, int(t.enrolled));
      cell(row, int(t.updates));
      cell(row, num(t.participation, 2));
      cell(row, num(t.mean_staleness, 2));
      cell(row, t.federated ? `${pct(t.federated.accuracy)} (${t.federated.devices})` : "-");
      cell(row, t.power_w === null ? "-" : num(t.power_w, 1));
      cell(row, energy(t.energy_j));
      cell(row, sig(t.co2e_g));
      cell(row, sig(t.train_s));
      cell(row, mb(t.bytes_up));
      cell(row, mb(t.bytes_down));
    }
    const gap = doc.gap;
    $("gap-now").textContent = gap
      ? `Fairness: at version ${gap.version}, tier ${gap.best} leads tier ${gap.worst} by ${pct(gap.gap)} federated accuracy (5-version window).`
      : "Fairness: the gap needs federated evaluations from at least two tiers.";
    const model = doc.cost.model;
    const powers = Object.entries(model.power_w).map(([k, w]) => `${k} ${w} W`).join(", ");
    $("cost-model").textContent = `Energy: reported by ${int(total.updates_metered)} updates, estimated for ${int(total.updates_estimated)} from train seconds (${powers}; other tiers ${model.default_power_w} W), unknown for ${int(total.updates_unknown)}. CO2e at ${model.grid_g_co2e_per_kwh} g/kWh.`;
    if (!this.painted) {
      this.painted = true;
      requestAnimationFrame(() => performance.mark("asyncfl:task-painted"));
    }
  }

  async run(gen) {
    show("task");
    $("dl-version").value = "";
    let failed = 0;
    while (gen === generation) {
      try {
        await this.catchUp(gen);
        if (failed < STREAM_TRIES) {
          failed = (await this.follow(gen)) > 0 ? 0 : failed + 1;
        } else {
          await this.poll(gen, Date.now() + POLL_SPELL_MS);
          failed = STREAM_TRIES - 1; // one more try of a stream
        }
      } catch (err) {
        if (err instanceof AuthError) return signOut(err.message);
        if (gen !== generation) return;
        $("task-error").textContent = String(err.message || err);
        failed += 1;
      }
      await sleep(POLL_MS);
    }
  }

  // Follow the stream until it ends; returns how many snapshots it brought.
  async follow(gen) {
    const controller = new AbortController();
    this.abort = controller;
    let timer = setTimeout(() => controller.abort(), FIRST_BYTE_MS);
    let got = 0;
    try {
      const path = `/admin/v1/tasks/${encodeURIComponent(this.id)}/stream`;
      const resp = await api(path, "GET", { accept: "text/event-stream", signal: controller.signal });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      while (gen === generation) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(timer);
        timer = setTimeout(() => controller.abort(), SILENT_MS);
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const data = eventData(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (data === null || gen !== generation) continue;
          const doc = JSON.parse(data);
          if (this.missed(doc)) await this.catchUp(gen);
          this.apply(doc, "stream");
          got += 1;
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") throw err;
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
    return got;
  }

  // The fallback: ask for the snapshot once a second, with its ETag (304: no change).
  async poll(gen, until) {
    let etag = "";
    const path = `/admin/v1/tasks/${encodeURIComponent(this.id)}/snapshot`;
    while (gen === generation && Date.now() < until) {
      const resp = await api(path, "GET", { headers: etag ? { "If-None-Match": etag } : {} });
      if (gen !== generation) return;
      if (resp.status === 200) {
        etag = resp.headers.get("ETag") || "";
        const doc = await resp.json();
        if (this.missed(doc)) await this.catchUp(gen);
        this.apply(doc, "poll");
      }
      await sleep(POLL_MS);
    }
  }

  async control(action) {
    try {
      await json(`/admin/v1/tasks/${encodeURIComponent(this.id)}/${action}`, "POST");
    } catch (err) {
      failed(err, $("task-error"));
    }
  }

  async download() {
    const version = $("dl-version").value || "latest";
    try {
      const resp = await api(`/admin/v1/tasks/${encodeURIComponent(this.id)}/versions/${encodeURIComponent(version)}/model.onnx`);
      const blob = await resp.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `${this.id}-v${resp.headers.get("X-Asyncfl-Version") || version}.onnx`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (err) {
      failed(err, $("task-error"));
    }
  }
}

let page = null;
$("pause").addEventListener("click", () => page && page.control("pause"));
$("resume").addEventListener("click", () => page && page.control("resume"));
$("download").addEventListener("click", () => page && page.download());

// One server-sent event's data lines, or null for a comment (a keepalive).
function eventData(block) {
  const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
  return data.length ? data.join("\n") : null;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && page && page.latest) page.render(page.latest);
});

// -- routing -------------------------------------------------------------------------------------
function route() {
  generation += 1;
  const gen = generation;
  if (page) page.stop();
  if (!token) return signOut();
  const match = location.hash.match(/^#\/tasks\/([^/]+)$/);
  if (match) {
    page = new TaskPage(decodeURIComponent(match[1]));
    page.run(gen);
  } else {
    page = null;
    overview(gen);
  }
}
window.addEventListener("hashchange", route);
route();
