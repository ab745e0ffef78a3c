"use strict";
/* The run list (/) and the run page (/runs/{id}), two modes of index.html. They read only the open GET endpoints,
   so they work unchanged when the controller has an API token, and poll while something can still change: the run
   page every 2 s until its run has ended, asking only for the metrics and syncs it has not seen
   (docs/architecture.md, decision 45). Nothing here writes HTML from data: every value goes in as text. */
(() => {
  const ROOT = new URL("..", document.currentScript.src);  // the controller's base URL, also behind a path prefix
  const RUN_POLL_MS = 2000;
  const LIST_POLL_MS = 5000;
  const SYNCS_REREAD = 20;  // the newest syncs are read again: their Reload outcome is filled in after the fact
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const fmt = SemirlPlot.format;
  let clockOffsetMs = 0;  // server clock minus ours, from the Date header: elapsed times use the server's clock

  class HttpError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
    }
  }

  async function getJSON(path) {
    const response = await fetch(new URL(path, ROOT), {cache: "no-store", headers: {Accept: "application/json"}});
    const served = Date.parse(response.headers.get("Date") || "");
    if (Number.isFinite(served)) clockOffsetMs = served - Date.now();
    if (!response.ok) throw new HttpError(response.status, (await response.text()).slice(0, 300));
    return response.json();
  }

  const nowSeconds = () => (Date.now() + clockOffsetMs) / 1000;
  const byId = id => document.getElementById(id);

  function text(tag, value, className) {
    const node = document.createElement(tag);
    node.textContent = value === null || value === undefined ? "" : String(value);
    if (className) node.className = className;
    return node;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const [h, m, r] = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
    const pad = v => String(v).padStart(2, "0");
    return h > 0 ? `${h}h ${pad(m)}m ${pad(r)}s` : m > 0 ? `${m}m ${pad(r)}s` : `${r}s`;
  }

  const clock = unix => (unix ? new Date(unix * 1000).toLocaleString() : "–");

  function stateBadge(node, state) {
    node.textContent = state;
    node.className = `state state-${state}`;
  }

  /* columns: [{label, num, value: row => text or Node}] */
  function fillTable(table, columns, rows, empty) {
    const head = document.createElement("tr");
    for (const c of columns) head.appendChild(text("th", c.label, c.num ? "num" : ""));
    const body = rows.map(row => {
      const tr = document.createElement("tr");
      for (const c of columns) {
        const value = c.value(row);
        const td = value instanceof Node ? document.createElement("td") : text("td", value, c.num ? "num" : "");
        if (value instanceof Node) td.appendChild(value);
        tr.appendChild(td);
      }
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = text("td", empty, "muted");
      td.colSpan = columns.length;
      tr.appendChild(td);
      body.push(tr);
    }
    table.replaceChildren(head, ...body);
  }

  function updated(message) {
    byId("updated").textContent = message || `updated ${new Date().toLocaleTimeString()}`;
  }

  /* Poll `once` every `interval` ms until it returns false; a failed poll is shown and retried. */
  function follow(once, interval) {
    const tick = async () => {
      let again = true;
      try {
        again = await once();
        updated();
      } catch (err) {
        updated(`not updated: ${err.message}`);
        again = !(err instanceof HttpError && (err.status === 404 || err.status === 409));
      }
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
      if (again) setTimeout(tick, interval);
    };
    tick();
  }

  // --- the run list ------------------------------------------------------------------------------------------

  const RUN_COLUMNS = [
    {label: "run", value: r => {
      const link = text("a", r.id);
      link.href = new URL(`runs/${encodeURIComponent(r.id)}`, ROOT).href;
      return link;
    }},
    {label: "name", value: r => r.name},
    {label: "state", value: r => text("span", r.state, `state state-${r.state}`)},
    {label: "step", num: true, value: r => r.step},
    {label: "policy", num: true, value: r => `v${r.policy_version}`},
    {label: "submitted", value: r => clock(r.created_at)},
    {label: "error", value: r => (r.error || "").slice(0, 120)},
  ];

  async function pollRunList() {
    const {runs} = await getJSON("v1/runs");
    fillTable(byId("runs"), RUN_COLUMNS, runs.slice().reverse(), "no runs yet");
    byId("message").textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}, newest first`;
    return true;
  }

  // --- the run page: data ------------------------------------------------------------------------------------

  const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const data = {run: null, metrics: [], syncs: []};

  /* New step metrics only. The first entry asked for is one we have: if its time differs, a resumed trainer has
     replaced steps since, and everything is read again (rare). */
  async function followMetrics() {
    const have = data.metrics.length;
    const since = Math.max(0, have - 1);
    const got = await getJSON(`v1/runs/${encodeURIComponent(runId)}/metrics?since=${since}`);
    if (have > 0 && (got.length === 0 || got[0].time !== data.metrics[have - 1].time)) {
      data.metrics = await getJSON(`v1/runs/${encodeURIComponent(runId)}/metrics`);
      return true;
    }
    const fresh = got.slice(have - since);
    data.metrics.push(...fresh);
    return fresh.length > 0;
  }

  /* True when a sync was added or one's Reload outcome came in. */
  async function followSyncs() {
    const since = Math.max(0, data.syncs.length - SYNCS_REREAD);
    const got = await getJSON(`v1/runs/${encodeURIComponent(runId)}/syncs?since=${since}`);
    const changed = JSON.stringify(got) !== JSON.stringify(data.syncs.slice(since));
    data.syncs.splice(since, Infinity, ...got);
    return changed;
  }

  async function pollRun() {
    const run = await getJSON(`v1/runs/${encodeURIComponent(runId)}`);
    const before = data.run;
    const stepsChanged = await followMetrics();
    const syncsChanged = await followSyncs();
    data.run = run;
    const first = !before;
    const evals = first || before.evals.length !== run.evals.length;
    renderRun(run, {plots: stepsChanged || evals || before.state !== run.state, evals, syncs: syncsChanged || first});
    return !TERMINAL.has(run.state);
  }

  // --- the run page: plots -----------------------------------------------------------------------------------

  const metricSeries = (key, label) => ({key, label, points: data.metrics
    .filter(m => Number.isFinite(m[key])).map(m => [m.step, m[key]])});

  /* Every step, 0 where the step did not report the part (e.g. checkpoint times only follow a checkpoint). */
  const stackedSeries = (key, label, value) => ({key, label, points: data.metrics.map(m => [m.step, value(m)])});
  const part = key => m => (Number.isFinite(m[key]) ? m[key] : 0);
  const TRAIN_PARTS = ["time_reference_s", "time_forward_backward_s", "time_optimizer_s"];

  function sourceRewards() {
    const keys = new Set(data.metrics.flatMap(m => Object.keys(m).filter(k => k.startsWith("reward_mean_"))));
    return keys.size > 1 ? [...keys].sort().map(k => metricSeries(k, k.slice("reward_mean_".length))) : [];
  }

  function evalSeries() {
    const sets = [...new Set(data.run.evals.map(e => e.eval_set))];
    return sets.map(name => {
      const rows = data.run.evals.filter(e => e.eval_set === name);
      const scored = rows.some(e => e.mean_score !== null && e.mean_score !== undefined);
      return {key: `eval:${name}`, label: `${name} (${scored ? "RM score" : "accuracy"})`,
              points: rows.map(e => [e.step, scored ? e.mean_score : e.accuracy])};
    });
  }

  const PLOTS = [
    {id: "reward", title: "Reward (mean over the step's samples)",
     series: () => [metricSeries("reward_mean", "all"), ...sourceRewards()]},
    {id: "heldout", title: "Held-out accuracy per evaluation set", series: evalSeries, what: "evaluations"},
    {id: "loss", title: "Loss", series: () => [metricSeries("loss", "loss")]},
    {id: "kl", title: "KL to the reference (GRPO) / reward margin (DPO)",
     series: () => [metricSeries("kl", "kl"), metricSeries("margin", "margin")]},
    {id: "length", title: "Response length (tokens, mean)",
     series: () => [metricSeries("response_tokens", "tokens")]},
    {id: "staleness", title: "Staleness (optimizer updates behind)",
     series: () => [metricSeries("staleness", "step − oldest version"), metricSeries("staleness_mean", "mean"),
                    metricSeries("staleness_max", "max")]},
    {id: "time", title: "Step time breakdown (seconds, stacked)", stacked: true, series: () => {
      const present = key => data.metrics.some(m => Number.isFinite(m[key]));
      const parts = [
        ["wait_seconds", "waiting for groups"], ["time_reference_s", "reference"],
        ["time_forward_backward_s", "forward/backward"], ["time_optimizer_s", "optimizer"],
      ].filter(([key]) => present(key)).map(([key, label]) => stackedSeries(key, label, part(key)));
      if (present("step_seconds")) {
        parts.push(stackedSeries("other_train_s", "other training", m => Math.max(0, part("step_seconds")(m) -
          TRAIN_PARTS.reduce((sum, key) => sum + part(key)(m), 0))));
      }
      return parts.concat([
        ["checkpoint_policy_s", "checkpoint: policy"], ["checkpoint_commit_s", "checkpoint: commit"],
        ["checkpoint_state_s", "checkpoint: state"], ["reload_s", "generator reload"],
      ].filter(([key]) => present(key)).map(([key, label]) => stackedSeries(key, label, part(key))));
    }},
  ];

  function plotFigures() {
    const section = byId("plots");
    return PLOTS.map(plot => {
      let figure = byId(`plot-${plot.id}`);
      if (!figure) {
        figure = document.createElement("figure");
        figure.id = `plot-${plot.id}`;
        figure.className = "plot";
        figure.dataset.plot = plot.id;
        figure.append(text("figcaption", plot.title), document.createElementNS("http://www.w3.org/2000/svg", "svg"),
                      text("div", "", "legend"));
        section.appendChild(figure);
      }
      return [plot, figure];
    });
  }

  function drawPlots(run) {
    for (const [plot, figure] of plotFigures()) {
      const nothingYet = plot.what === "evaluations" ? run.evals.length === 0 : data.metrics.length === 0;
      const empty = nothingYet && !TERMINAL.has(run.state) ? "no data yet" : "no data (not reported by this run)";
      SemirlPlot.draw(figure, {series: plot.series(), stacked: plot.stacked, xMax: run.spec.train.steps, empty});
    }
  }

  // --- the run page: the rest --------------------------------------------------------------------------------

  function facts(run) {
    const spec = run.spec;
    const end = run.finished_at || (run.started_at ? nowSeconds() : null);
    const sync = spec.sync.max_staleness ? `${spec.sync.interval}, staleness ≤ ${spec.sync.max_staleness}`
      : String(spec.sync.interval);
    const shown = [
      ["step", `${run.step} / ${spec.train.steps}`],
      ["policy", `v${run.policy_version}`],
      ["generators on", `v${run.generation_version}`],
      ["syncs", run.syncs],
      ["elapsed", run.started_at ? duration(end - run.started_at) : "not started"],
      ["algorithm", spec.algorithm],
      ["sync interval", sync],
      ["submitted", clock(run.created_at)],
    ];
    if (run.state === "queued" && run.queue_position !== null) shown.push(["queue position", run.queue_position]);
    if (run.resumed_from_step) shown.push(["resumed from step", run.resumed_from_step]);
    if (run.best) shown.push(["best", `step ${run.best.step}: ${run.best.metric} ${fmt(run.best.value)}`]);
    for (const [name, count] of Object.entries(run.counters || {})) shown.push([name.replaceAll("_", " "), count]);
    byId("facts").replaceChildren(...shown.map(([name, value]) => {
      const item = document.createElement("div");
      item.append(text("span", name), String(value));
      return item;
    }));
    byId("progress-bar").style.width = `${Math.min(100, 100 * run.step / spec.train.steps)}%`;
  }

  const EVAL_COLUMNS = [
    {label: "step", num: true, value: e => e.step},
    {label: "set", value: e => e.eval_set},
    {label: "policy", num: true, value: e => `v${e.policy_version}`},
    {label: "accuracy", num: true, value: e => `${(100 * e.accuracy).toFixed(1)}%` +
      (e.stderr === null ? "" : ` ± ${(100 * e.stderr).toFixed(1)}`)},
    {label: "RM score", num: true, value: e => fmt(e.mean_score)},  // "–" for a set the verifier scores
    {label: "per token", num: true, value: e => fmt(e.mean_score_per_token)},
    {label: "prompts", num: true, value: e => e.prompts},
    {label: "samples scored", num: true, value: e => `${e.samples_scored} / ${e.samples_expected}`},
    {label: "failed prompts", num: true, value: e => e.failed_prompts},
    {label: "response tokens", num: true, value: e => fmt(e.mean_response_tokens)},
  ];

  /* A sync with no outcome is pending while it is the newest of a live run; after that none will come (a newer
     sync replaced its fan-out, or the controller restarted meanwhile). */
  function reloadOutcome(s) {
    if (s.reload !== null) {
      return `${s.reload.ok} / ${s.reload.generators} loaded` +
        (s.reload.failed.length ? ` (${s.reload.failed.join("; ")})` : "");
    }
    const newest = data.syncs.length ? data.syncs[data.syncs.length - 1].sync : s.sync;
    return s.sync < newest || (data.run && TERMINAL.has(data.run.state)) ? "superseded or not recorded" : "pending";
  }
  const SYNC_ROWS = 200;  // the newest; an online run of thousands of steps has as many syncs

  const SYNC_COLUMNS = [
    {label: "sync", num: true, value: s => s.sync},
    {label: "version", value: s => `v${s.previous_version} → v${s.policy_version}`},
    {label: "trainer step", num: true, value: s => s.trainer_step},
    {label: "window", num: true, value: s => (s.window === null ? "async" : s.window)},
    {label: "at", value: s => clock(s.at)},
    {label: "reload", value: reloadOutcome},
    {label: "slowest load", num: true, value: s => (s.reload && s.reload.load_seconds !== null
      ? `${s.reload.load_seconds.toFixed(2)} s` : "–")},
  ];

  function services(run) {
    fillTable(byId("replicas"), [
      {label: "service", value: ([name]) => name},
      {label: "ready", num: true, value: ([, r]) => r.ready},
      {label: "total", num: true, value: ([, r]) => r.total},
    ], Object.entries(run.replicas || {}), run.discovery_error || "none found");
    fillTable(byId("queues"), [
      {label: "stream", value: ([name]) => name},
      {label: "lag", num: true, value: ([, q]) => q.lag},
      {label: "pending", num: true, value: ([, q]) => q.pending},
      {label: "length", num: true, value: ([, q]) => q.length},
    ], Object.entries(run.queues || {}), "–");
    fillTable(byId("reload"), [
      {label: "generator", value: r => r.generator},
      {label: "ok", value: r => (r.ok ? "yes" : "no")},
      {label: "detail", value: r => r.detail},
    ], run.last_reload || [], "none yet");
  }

  /* changed: {plots, evals, syncs}, what needs drawing again (the tables of a long run have thousands of rows). */
  function renderRun(run, changed) {
    document.title = `${run.name} · semirl`;
    byId("name").textContent = run.name;
    byId("run-id").textContent = run.id;
    stateBadge(byId("state"), run.state);
    byId("error").textContent = run.error || "";
    facts(run);
    if (changed.plots) drawPlots(run);
    if (changed.evals) fillTable(byId("evals"), EVAL_COLUMNS, run.evals, "no evaluation yet");
    if (changed.syncs) fillTable(byId("syncs"), SYNC_COLUMNS, data.syncs.slice(-SYNC_ROWS).reverse(), "no sync yet");
    services(run);
    Object.assign(document.body.dataset, {state: run.state, steps: String(data.metrics.length)});
  }

  const page = /\/runs\/[^/]+$/.test(location.pathname) ? "run" : "runs";
  document.body.dataset.page = page;
  if (page === "runs") {
    byId("list-page").hidden = false;
    follow(pollRunList, LIST_POLL_MS);
  } else {
    for (const id of ["run-page", "home", "state"]) byId(id).hidden = false;
    byId("run-id").textContent = runId;
    follow(pollRun, RUN_POLL_MS);
  }
})();
