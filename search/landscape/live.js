// The live loss landscape of one study (search/landscape/live.py serves it at /live/studies/<id>).
//
// First load: /live/api/studies/<id>/grid, every trial's losses already averaged in epoch
// bins (uint16, log-quantised, base64). Then /live/api/studies/<id>?after=<cursor> every
// second: the epochs written since, folded into the same bins here, and the trials that are
// new or changed state. Figures are redrawn with Plotly.react and a fixed uirevision, so a
// zoom, a pan or a trace hidden from the legend survives every update.
(function () {
  "use strict";
  const root = document.getElementById("live");
  const studyId = root.dataset.study;
  const api = "/live/api/studies/" + studyId;
  const POLL_MS = Number(root.dataset.poll || 1000);
  const CURVE_TRACES = 60, BANDS = 24, CURVE_POINTS = 12000;
  const live = {
    bin: 1, bins: 0, epochs: 0, cursor: null, param: "learning_rate", log: true, trials: new Map(), received: 0, renders: 0,
    objective: "val_accuracy", maximize: true, objectiveKept: true,
    lastEpochAt: null, error: null, polls: 0,
  };
  window.hpsearchLive = live; // for the browser test and the curious

  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  function colour(t) {
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
    return "rgb(" + c.join(",") + ")";
  }
  const finite = (v) => v !== null && v !== undefined && Number.isFinite(v);

  function trial(number) {
    let t = live.trials.get(number);
    if (!t) {
      t = { number: number, state: "WAITING", lr: null, lane: null, n: 0, best: null,
            loss: [], val: [], cl: [], cv: [] };
      live.trials.set(number, t);
    }
    return t;
  }
  function setTrial(d) {
    const t = trial(d.number);
    t.state = d.state;
    if (d.learning_rate !== undefined && d.learning_rate !== null) t.lr = d.learning_rate;
    if (d.lane !== undefined) t.lane = d.lane;
    return t;
  }
  function decode(b64, lo, hi) {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const q = new Uint16Array(bytes.buffer);
    const out = new Float64Array(q.length);
    for (let i = 0; i < q.length; i++) out[i] = q[i] === 65535 ? NaN : Math.pow(10, lo + (q[i] / 65534) * (hi - lo));
    return out;
  }
  function fold(arr, cnt, b, v) {
    while (arr.length <= b) { arr.push(NaN); cnt.push(0); }
    if (!finite(v)) return;
    const c = cnt[b];
    arr[b] = c === 0 || !Number.isFinite(arr[b]) ? v : (arr[b] * c + v) / (c + 1);
    cnt[b] = c + 1;
  }
  function addEpoch(e) {
    const t = trial(e.trial);
    if (e.epoch < t.n) return; // a trial's epochs arrive in order: this one is in already
    if (finite(e.learning_rate)) t.lr = e.learning_rate;
    if (t.state === "WAITING") t.state = "RUNNING";
    const b = Math.floor(e.epoch / live.bin);
    fold(t.loss, t.cl, b, e.loss);
    fold(t.val, t.cv, b, e.val_loss);
    t.n = e.epoch + 1;
    // The feed carries loss, val_loss, accuracy and val_accuracy; any other objective as "value".
    const v = live.objectiveKept ? e[live.objective] : e.value;
    if (finite(v) && (t.best === null || (live.maximize ? v > t.best : v < t.best))) t.best = v;
    live.epochs = Math.max(live.epochs, t.n);
    live.received += 1;
  }

  // ---- figures ------------------------------------------------------------------------
  function lossTicks(lo, hi) { // 1-2-5 losses inside [lo, hi] (log10), labelled in full
    let vals = [], text = [];
    for (let k = Math.floor(lo) - 1; k <= Math.ceil(hi); k++) {
      for (const m of [1, 2, 5]) {
        const v = m * Math.pow(10, k), l = Math.log10(v);
        if (l >= lo && l <= hi) { vals.push(l); text.push(String(Number(v.toPrecision(2)))); }
      }
    }
    if (vals.length > 7) { const keep = vals.map((_, i) => text[i].replace(/^[0.]+/, "").startsWith("1")); vals = vals.filter((_, i) => keep[i]); text = text.filter((_, i) => keep[i]); }
    if (vals.length < 2) { vals = [lo, hi]; text = [Math.pow(10, lo).toPrecision(2), Math.pow(10, hi).toPrecision(2)]; }
    return { tickvals: vals, ticktext: text };
  }
  function decades(lo, hi, log) {
    const vals = [], text = [];
    for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
      if (k >= lo - 1e-9 && k <= hi + 1e-9) { vals.push(log ? k : Math.pow(10, k)); text.push(String(Math.pow(10, k))); }
    }
    return { tickvals: vals, ticktext: text };
  }
  function percentile(sorted, p) {
    if (!sorted.length) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(p * (sorted.length - 1))))];
  }
  function base(title) {
    return { title: { text: title, x: 0.02, xanchor: "left", font: { size: 15 } }, template: "plotly_white",
             margin: { l: 64, r: 16, t: 48, b: 52 }, font: { size: 11 }, uirevision: "live",
             paper_bgcolor: "white", plot_bgcolor: "white" };
  }
  // The study's parameter (the recipe's learning rate, or a user's model's landscape_param):
  // a log10 axis when every value is positive and they span a decade, else linear (as the
  // stored figures, search/landscape/figures.py Axis).
  function decideScale(ts) {
    const v = ts.map((t) => t.lr);
    const lo = Math.min(...v), hi = Math.max(...v);
    live.log = v.length > 0 && lo > 0 && (live.param === "learning_rate" || hi >= 10 * lo);
  }
  const px = (v) => (live.log ? Math.log10(v) : v);
  const label = () => (live.param === "learning_rate" ? "learning rate" : live.param);
  function drawn() {
    return Array.from(live.trials.values()).filter((t) => finite(t.lr) && t.n > 0)
      .sort((a, b) => a.lr - b.lr || a.number - b.number);
  }
  function centres(nb) {
    const y = [];
    for (let b = 0; b < nb; b++) y.push(b * live.bin + (Math.min(live.bin, Math.max(live.epochs, 1) - b * live.bin) + 1) / 2);
    return y;
  }
  function heatmap(ts, key, title) {
    const nb = Math.max(1, Math.ceil(live.epochs / live.bin));
    const x = [];
    let last = -Infinity;
    for (const t of ts) { let v = px(t.lr); if (v <= last) v = last + 1e-6; x.push(v); last = v; }
    const z = [], all = [];
    for (let b = 0; b < nb; b++) {
      const row = new Array(ts.length);
      for (let i = 0; i < ts.length; i++) {
        const m = ts[i][key][b];
        row[i] = finite(m) && m > 0 ? Math.log10(m) : null;
        if (row[i] !== null) all.push(row[i]);
      }
      z.push(row);
    }
    all.sort((a, b) => a - b);
    let zmin = percentile(all, 0.01), zmax = percentile(all, 0.99);
    if (!(zmax - zmin > 1e-3)) { zmin = (zmin || 0) - 0.25; zmax = (zmax || 0) + 0.25; }
    const lo = x.length ? x[0] : -4, hi = x.length ? x[x.length - 1] : -1;
    const ct = lossTicks(zmin, zmax);
    const running = ts.filter((t) => t.state === "RUNNING");
    const traces = [{
      type: "heatmap", x: x, y: centres(nb), z: z, zmin: zmin, zmax: zmax, colorscale: "Viridis", reversescale: false,
      colorbar: { title: { text: "loss", side: "right" }, tickvals: ct.tickvals, ticktext: ct.ticktext, thickness: 12 },
      hovertemplate: label() + (live.log ? " 10^%{x:.2f}" : " %{x:.4g}") + "<br>epoch %{y}<br>log10 loss %{z:.3f}<extra></extra>", name: "loss",
    }, {
      type: "scatter", mode: "markers", name: "running (growing)", x: running.map((t) => px(t.lr)),
      y: running.map((t) => t.n), customdata: running.map((t) => t.number),
      marker: { symbol: "triangle-up", size: 9, color: "#d62728", line: { color: "white", width: 1 } },
      hovertemplate: "trial %{customdata}, running<br>epoch %{y}<extra></extra>",
    }];
    const layout = base(title);
    if (live.log) {
      const xt = decades(lo, hi, true);
      layout.xaxis = { title: { text: label() + " (log scale)" }, tickvals: xt.tickvals, ticktext: xt.ticktext, zeroline: false };
    } else {
      layout.xaxis = { title: { text: label() }, zeroline: false };
    }
    layout.yaxis = { title: { text: "epoch" }, range: [0.5, Math.max(live.epochs, 1) + 0.5], zeroline: false };
    layout.legend = { orientation: "h", y: -0.2, x: 0 };
    return [traces, layout];
  }
  function curves(ts, key, title) {
    const traces = [];
    if (!ts.length) return [traces, base(title)];
    const lo = px(ts[0].lr), hi = px(ts[ts.length - 1].lr), span = Math.max(hi - lo, 1e-6);
    const xs = centres(Math.max(1, Math.ceil(live.epochs / live.bin)));
    const pos = (t) => (px(t.lr) - lo) / span;
    if (ts.length <= CURVE_TRACES) {
      for (const t of ts) {
        traces.push({ type: "scatter", mode: "lines", name: "trial " + t.number + " (" + t.lr.toPrecision(3) + ")",
          x: xs.slice(0, t[key].length), y: t[key].map((v) => (finite(v) ? v : null)),
          line: { color: colour(pos(t)), width: t.state === "RUNNING" ? 3 : 1.5, dash: t.state === "RUNNING" ? "dot" : "solid" },
          hovertemplate: "trial " + t.number + ", " + label() + " " + t.lr.toPrecision(3) + " (" + t.state.toLowerCase() + ")<br>epoch %{x}<br>loss %{y:.4g}<extra></extra>" });
      }
    } else {
      // Many trials: one trace per colour band, and about CURVE_POINTS points in all (bins
      // merged k at a time), so a redraw stays quick however large the study grows.
      const k = Math.max(1, Math.ceil((ts.length * xs.length) / CURVE_POINTS));
      const bands = Array.from({ length: BANDS }, () => ({ x: [], y: [], ids: [] }));
      for (const t of ts) {
        const band = bands[Math.min(BANDS - 1, Math.floor(pos(t) * BANDS))];
        const a = t[key], c = key === "val" ? t.cv : t.cl;
        for (let b = 0; b < a.length; b += k) {
          let sum = 0, n = 0;
          for (let j = b; j < Math.min(a.length, b + k); j++) if (finite(a[j]) && c[j] > 0) { sum += a[j] * c[j]; n += c[j]; }
          band.x.push((xs[b] + xs[Math.min(a.length, b + k) - 1]) / 2); band.y.push(n ? sum / n : null); band.ids.push(t.number);
        }
        band.x.push(null); band.y.push(null); band.ids.push(null);
      }
      bands.forEach((band, i) => {
        if (!band.x.length) return;
        const a = lo + (i / BANDS) * span, b = lo + ((i + 1) / BANDS) * span;
        const value = (p) => (live.log ? Math.pow(10, p) : p).toPrecision(2);
        traces.push({ type: "scatter", mode: "lines", name: value(a) + "-" + value(b),
          x: band.x, y: band.y, customdata: band.ids, connectgaps: false, line: { color: colour((i + 0.5) / BANDS), width: 1 },
          hovertemplate: "trial %{customdata}<br>epoch %{x}<br>loss %{y:.4g}<extra></extra>" });
      });
    }
    const layout = base(title);
    layout.xaxis = { title: { text: "epoch" }, range: [0.5, Math.max(live.epochs, 1) + 0.5] };
    layout.yaxis = { title: { text: "loss (log scale)" }, type: "log" };
    layout.showlegend = ts.length <= 12 || ts.length > CURVE_TRACES;
    layout.legend = { font: { size: 9 } };
    return [traces, layout];
  }
  const METRIC_NAMES = { val_accuracy: "validation accuracy", val_loss: "validation loss", accuracy: "training accuracy", loss: "training loss" };
  function accuracy(ts) {
    const metric = METRIC_NAMES[live.objective] || live.objective;
    const pct = /acc/.test(live.objective);
    const groups = [["COMPLETE", "complete", { symbol: "circle", color: "#1f77b4", size: 8 }],
      ["PRUNED", "pruned", { symbol: "x-thin-open", color: "#7f7f7f", size: 8, line: { width: 1.5 } }],
      ["RUNNING", "running", { symbol: "triangle-up", color: "#d62728", size: 10 }],
      ["FAIL", "failed", { symbol: "square-open", color: "#ff7f0e", size: 7 }]];
    const traces = groups.map(([state, name, marker]) => {
      const g = ts.filter((t) => t.state === state && finite(t.best));
      return { type: "scatter", mode: "markers", name: name + " (" + g.length + ")", x: g.map((t) => t.lr), y: g.map((t) => t.best),
               customdata: g.map((t) => t.number), marker: marker,
               hovertemplate: "trial %{customdata} (" + name + ")<br>" + label() + " %{x:.3g}<br>best " + metric +
                 (pct ? " %{y:.2%}" : " %{y:.4g}") + "<extra></extra>" };
    });
    const layout = base("Best " + metric + " against " + label());
    layout.xaxis = live.log ? { title: { text: label() + " (log scale)" }, type: "log" } : { title: { text: label() }, type: "linear" };
    layout.yaxis = pct ? { title: { text: "best " + metric }, tickformat: ".0%" } : { title: { text: "best " + metric } };
    layout.legend = { orientation: "h", y: -0.2, x: 0 };
    return [traces, layout];
  }

  const CONFIG = { displaylogo: false, responsive: true, showTips: false };
  let pending = false;
  function render() {
    pending = false;
    const started = performance.now();
    const ts = drawn();
    decideScale(Array.from(live.trials.values()).filter((t) => finite(t.lr)));
    const figs = {
      "live-heat-val": heatmap(ts, "val", "Validation loss over " + label() + " and epoch"),
      "live-heat-train": heatmap(ts, "loss", "Training loss over " + label() + " and epoch"),
      "live-curves-val": curves(ts, "val", "Learning curves: validation loss"),
      "live-curves-train": curves(ts, "loss", "Learning curves: training loss"),
      "live-accuracy": accuracy(Array.from(live.trials.values()).filter((t) => finite(t.lr))),
    };
    const built = performance.now();
    live.figureMs = {};
    for (const id in figs) {
      const t0 = performance.now();
      Plotly.react(id, figs[id][0], figs[id][1], CONFIG);
      live.figureMs[id] = Math.round(performance.now() - t0);
    }
    live.buildMs = Math.round(built - started);
    live.renders += 1;
    live.renderedAt = performance.now(); // ms since navigation started (benchmarks read it)
    live.renderMs = live.renderedAt - started;
    if (live.firstRenderMs === undefined) live.firstRenderMs = live.renderedAt;
    const running = ts.filter((t) => t.state === "RUNNING").length;
    document.getElementById("status").textContent = live.trials.size + " trials (" + running + " running), " +
      live.received + " epochs received, bins of " + live.bin + " epoch" + (live.bin > 1 ? "s" : "") +
      "; updated " + new Date().toLocaleTimeString();
  }
  function schedule() {
    if (!pending) { pending = true; window.requestAnimationFrame(render); }
  }

  async function getJSON(url, preloaded) {
    // The first load may use the response the page preloaded while Plotly was parsed.
    const r = await fetch(url, preloaded ? {} : { cache: "no-store" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status + " " + (await r.text()).slice(0, 200));
    return r.json();
  }
  async function first() {
    const g = await getJSON(api + "/grid", true);
    live.bin = g.bin_epochs;
    live.param = g.param || "learning_rate";
    live.objective = g.objective || "val_accuracy";
    live.maximize = g.maximize !== false;
    live.objectiveKept = g.objective_kept !== false;
    live.cursor = g.cursor;
    const loss = decode(g.loss, g.quant[0], g.quant[1]), val = decode(g.val_loss, g.quant[0], g.quant[1]);
    g.trials.forEach((d, i) => {
      const t = setTrial(d);
      t.n = d.epochs_run;
      t.best = d.best;
      const nb = Math.ceil(t.n / live.bin);
      for (let b = 0; b < nb; b++) {
        const count = Math.min(live.bin, t.n - b * live.bin);
        t.loss.push(loss[i * g.bins + b]); t.cl.push(Number.isFinite(loss[i * g.bins + b]) ? count : 0);
        t.val.push(val[i * g.bins + b]); t.cv.push(Number.isFinite(val[i * g.bins + b]) ? count : 0);
      }
      live.epochs = Math.max(live.epochs, t.n);
    });
    live.epochs = Math.max(live.epochs, g.epochs || 0);
    render();
  }
  async function poll() {
    try {
      let more = true;
      while (more) {
        const f = await getJSON(api + "?after=" + encodeURIComponent(live.cursor));
        f.trials.forEach(setTrial);
        f.epochs.forEach(addEpoch);
        if (f.epochs.length) live.lastEpochAt = Date.now();
        live.cursor = f.cursor;
        live.polls += 1;
        more = f.more;
        if (f.epochs.length || f.trials.length) schedule();
      }
      live.error = null;
    } catch (err) {
      live.error = String(err);
      document.getElementById("status").textContent = "cannot reach the feed: " + live.error;
    }
    window.setTimeout(poll, POLL_MS);
  }
  first().then(() => window.setTimeout(poll, POLL_MS), (err) => {
    live.error = String(err);
    document.getElementById("status").textContent = "cannot load the study: " + live.error;
  });
})();
