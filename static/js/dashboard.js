/* SynapseX dashboards: every chart is Plotly (static/vendor/plotly.min.js), fed by the
   session-authenticated JSON endpoints named in each chart's data-src attribute. */
(function () {
  "use strict";

  var PLOT_CONFIG = { displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };
  var COLORS = ["#2952cc", "#d9480f", "#2f9e44", "#ae3ec9", "#0c8599", "#e67700", "#c2255c",
    "#5c940d", "#1864ab", "#862e9c"];
  var TYPE_COLORS = { thumbs_up: "#2f9e44", thumbs_down: "#e03131", correction: "#2952cc",
    rating: "#e67700", report: "#868e96" };
  // Markers make each logged point visible (and countable); long curves draw lines only.
  var MARKER_LIMIT = 400;

  function layout(extra) {
    var base = {
      margin: { l: 56, r: 16, t: 36, b: 48 },
      font: { family: "system-ui, sans-serif", size: 12, color: "#1d2330" },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff",
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
      xaxis: { gridcolor: "#eef0f4", zeroline: false },
      yaxis: { gridcolor: "#eef0f4", zeroline: false },
    };
    return Object.assign(base, extra || {});
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error(url + " answered " + r.status); }
        return r.json();
      });
  }

  function draw(el, traces, extraLayout) {
    if (!el) { return; }
    // A note written over an earlier plot leaves Plotly's state behind: start that one afresh.
    if (!el.querySelector(".main-svg")) { Plotly.purge(el); el.textContent = ""; }
    el.style.minHeight = "";
    el.classList.remove("muted");
    el.setAttribute("data-drawn", "1");
    return Plotly.react(el, traces, layout(extraLayout), PLOT_CONFIG);
  }

  function emptyNote(el, text) {
    Plotly.purge(el);
    el.setAttribute("data-drawn", "0");
    el.textContent = text;
    el.classList.add("muted");
    el.style.minHeight = "0";
  }

  function mode(n) { return n <= MARKER_LIMIT ? "lines+markers" : "lines"; }

  function fmt(x, digits) {
    if (x === null || x === undefined || x === "") { return "–"; }
    if (typeof x === "number") { return x.toFixed(digits === undefined ? 4 : digits); }
    return String(x);
  }

  // ---- charts ----------------------------------------------------------------------------

  function feedbackChart(el, data) {
    var traces = Object.keys(data.series).map(function (type) {
      return { type: "bar", name: type, x: data.dates, y: data.series[type],
        marker: { color: TYPE_COLORS[type] } };
    });
    draw(el, traces, { barmode: "stack", yaxis: { title: { text: "feedback" },
      gridcolor: "#eef0f4", rangemode: "nonnegative" }, xaxis: { type: "date" } });
  }

  function abPie(el, ab, note) {
    var labels = Object.keys(ab.versions || {});
    if (!ab.enabled || labels.length === 0) {
      emptyNote(el, note || "No A/B test is running: the active version serves all traffic.");
      return;
    }
    draw(el, [{ type: "pie", labels: labels, values: labels.map(function (k) {
      return ab.versions[k]; }), hole: 0.45, sort: false, textinfo: "label+percent",
      marker: { colors: COLORS } }], { margin: { l: 10, r: 10, t: 10, b: 10 },
      showlegend: false });
  }

  function lossTraces(curves) {
    var t = curves.train, e = curves.eval;
    var traces = [{ type: "scatter", mode: mode(t.step.length), name: "loss", x: t.step,
      y: t.loss, line: { color: COLORS[0], width: 2 }, marker: { size: 5 },
      customdata: t.epoch, hovertemplate: "step %{x}<br>epoch %{customdata:.2f}<br>loss %{y:.4f}" +
      "<extra></extra>" }];
    if (e.step.length) {
      traces.push({ type: "scatter", mode: "lines+markers", name: "eval loss", x: e.step,
        y: e.eval_loss, line: { color: COLORS[1], width: 2, dash: "dot" },
        marker: { size: 7, symbol: "diamond" } });
    }
    return traces;
  }

  function lossChart(el, curves) {
    if (!curves.train.step.length && !curves.eval.step.length) {
      if (el.getAttribute("data-drawn") !== "0") { emptyNote(el, "No loss logged yet."); }
      return;
    }
    draw(el, lossTraces(curves), { xaxis: { title: { text: "step" }, gridcolor: "#eef0f4" },
      yaxis: { title: { text: "loss" }, gridcolor: "#eef0f4" } });
  }

  function marginChart(el, dpo) {
    if (!el) { return; }
    if (!dpo.step.length) {
      if (el.getAttribute("data-drawn") !== "0") { emptyNote(el, "No reward margins logged yet."); }
      return;
    }
    var traces = [{ type: "scatter", mode: mode(dpo.step.length), name: "reward margin",
      x: dpo.step, y: dpo.margin, line: { color: COLORS[2] } }];
    if (dpo.accuracy.some(function (a) { return a !== null; })) {
      traces.push({ type: "scatter", mode: "lines", name: "reward accuracy", x: dpo.step,
        y: dpo.accuracy, yaxis: "y2", line: { color: COLORS[3], dash: "dot" } });
    }
    draw(el, traces, { xaxis: { title: { text: "step" }, gridcolor: "#eef0f4" },
      yaxis: { title: { text: "chosen − rejected reward" }, gridcolor: "#eef0f4" },
      yaxis2: { title: { text: "accuracy" }, overlaying: "y", side: "right", range: [0, 1] } });
  }

  // Rows of adapters.metrics.versions_online_metrics: thumbs_up_rate {value, n, ci95}.
  function rateBars(rows) {
    var measured = rows.filter(function (r) {
      return r.thumbs_up_rate && r.thumbs_up_rate.value !== null; });
    return {
      x: measured.map(function (r) { return r.version; }),
      y: measured.map(function (r) { return r.thumbs_up_rate.value; }),
      hi: measured.map(function (r) { var c = r.thumbs_up_rate.ci95;
        return c ? c[1] - r.thumbs_up_rate.value : 0; }),
      lo: measured.map(function (r) { var c = r.thumbs_up_rate.ci95;
        return c ? r.thumbs_up_rate.value - c[0] : 0; }),
      n: measured.map(function (r) { return "n=" + r.thumbs_up_rate.n; }),
    };
  }

  function versionMetricsChart(el, metrics) {
    var bars = rateBars((metrics && metrics.versions) || []);
    if (!bars.x.length) { emptyNote(el, "No thumbs on served versions yet."); return; }
    draw(el, [{ type: "bar", name: "thumbs-up rate", x: bars.x, y: bars.y,
      marker: { color: COLORS[0] }, text: bars.n, textposition: "outside",
      error_y: { type: "data", symmetric: false, array: bars.hi, arrayminus: bars.lo,
        color: "#1d2330" } }],
      { yaxis: { title: { text: "thumbs-up rate (95% CI)" }, range: [0, 1.15],
        gridcolor: "#eef0f4" }, xaxis: { type: "category" } });
  }

  // ---- job page: live status, progress, curves, events --------------------------------------

  function setProgress(bar, fraction) {
    var pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", pct + "%");
    bar.querySelector(".bar").style.width = pct + "%";
    var label = document.querySelector("[data-progress-label]");
    if (label) { label.textContent = pct + "%"; }
  }

  function renderEvents(tbody, events) {
    tbody.innerHTML = "";
    events.forEach(function (ev) {
      var tr = document.createElement("tr");
      [new Date(ev.at).toLocaleString(), ev.type,
        ev.to_status ? (ev.from_status || "–") + " → " + ev.to_status : "", ev.message]
        .forEach(function (text) {
          var td = document.createElement("td"); td.textContent = text || ""; tr.appendChild(td);
        });
      tbody.appendChild(tr);
    });
  }

  function jobLive(root) {
    var src = root.getAttribute("data-src");
    var interval = parseInt(root.getAttribute("data-interval") || "1500", 10);
    var timer = null;
    function apply(data) {
      var job = data.job;
      var badge = root.querySelector("[data-field=status]");
      badge.textContent = job.status; badge.className = "badge " + job.status;
      var bar = root.querySelector("[role=progressbar]");
      setProgress(bar, job.progress);
      bar.classList.toggle("ok", job.status === "completed");
      root.querySelector("[data-field=epoch]").textContent =
        job.current_epoch + " / " + (job.total_epochs || "–");
      root.querySelector("[data-field=loss]").textContent = fmt(job.metrics.loss);
      var reason = root.querySelector("[data-field=failure]");
      if (reason) { reason.textContent = job.failure_reason || ""; reason.hidden = !job.failure_reason; }
      lossChart(document.getElementById("loss-chart"), data.curves);
      marginChart(document.getElementById("margin-chart"), data.curves.dpo);
      renderEvents(document.getElementById("event-rows"), data.events);
      var cancel = document.getElementById("cancel-form");
      if (cancel && job.is_terminal) { cancel.hidden = true; }
      root.setAttribute("data-status", job.status);
      if (job.is_terminal && timer) { clearInterval(timer); timer = null; }
    }
    function tick() { getJSON(src).then(apply).catch(function (err) {
      root.querySelector("[data-field=poll-error]").textContent = String(err); }); }
    tick();
    if (root.getAttribute("data-terminal") !== "1") { timer = setInterval(tick, interval); }
  }

  // ---- adapters page: the A/B editor's live pie and sum ---------------------------------------

  function abEditor(form) {
    var pie = document.getElementById("ab-editor-chart");
    var sumEl = document.getElementById("ab-sum");
    function read() {
      var versions = {}, total = 0;
      form.querySelectorAll("input[data-weight]").forEach(function (input) {
        var v = parseFloat(input.value);
        if (!isNaN(v) && v > 0) { versions[input.getAttribute("data-weight")] = v; total += v; }
      });
      return { versions: versions, total: total };
    }
    function update() {
      var state = read();
      var ok = Math.abs(state.total - 1) < 1e-6;
      sumEl.textContent = "Sum of weights: " + state.total.toFixed(3) +
        (ok ? " ✓" : " (must be 1)");
      sumEl.className = "split-sum " + (ok ? "ok" : "bad");
      var labels = Object.keys(state.versions);
      if (!labels.length) { emptyNote(pie, "No weights yet."); return; }
      draw(pie, [{ type: "pie", labels: labels, values: labels.map(function (k) {
        return state.versions[k]; }), hole: 0.45, sort: false, textinfo: "label+percent",
        marker: { colors: COLORS } }], { margin: { l: 10, r: 10, t: 10, b: 10 },
        showlegend: false });
    }
    form.addEventListener("input", update);
    update();
  }

  // ---- staff ------------------------------------------------------------------------------

  function staffCharts(data) {
    var overlay = document.getElementById("staff-loss-chart");
    var traces = [];
    data.comparison.curves.forEach(function (c, i) {
      traces.push({ type: "scatter", mode: mode(c.step.length), name: c.tenant + " " + c.job_id,
        x: c.step, y: c.loss, line: { color: COLORS[i % COLORS.length] }, marker: { size: 4 } });
      if (c.eval_step.length) {
        traces.push({ type: "scatter", mode: "lines+markers", name: c.job_id + " eval",
          x: c.eval_step, y: c.eval_loss, line: { color: COLORS[i % COLORS.length], dash: "dot" },
          marker: { symbol: "diamond" } });
      }
    });
    if (traces.length) {
      draw(overlay, traces, { xaxis: { title: { text: "step" }, gridcolor: "#eef0f4" },
        yaxis: { title: { text: "loss" }, gridcolor: "#eef0f4" } });
    } else { emptyNote(overlay, "No job has logged a loss yet."); }

    var gpu = document.getElementById("staff-gpu-chart");
    var tenants = Object.keys(data.gpu_hours.tenants);
    if (tenants.length) {
      draw(gpu, tenants.map(function (slug, i) {
        return { type: "bar", name: slug, x: data.gpu_hours.months,
          y: data.gpu_hours.tenants[slug], marker: { color: COLORS[i % COLORS.length] } };
      }), { barmode: "stack", yaxis: { title: { text: "GPU-hours" }, gridcolor: "#eef0f4" },
        xaxis: { type: "category" } });
    } else { emptyNote(gpu, "No GPU time recorded yet."); }

    var ab = document.getElementById("staff-ab-chart");
    var running = data.ab_tests.filter(function (t) { return t.enabled; });
    if (running.length) {
      var labels = {};
      running.forEach(function (t) { Object.keys(t.versions).forEach(function (v) {
        labels[v] = true; }); });
      draw(ab, Object.keys(labels).map(function (v, i) {
        return { type: "bar", orientation: "h", name: v,
          y: running.map(function (t) { return t.tenant; }),
          x: running.map(function (t) { return t.versions[v] || 0; }),
          marker: { color: COLORS[i % COLORS.length] } };
      }), { barmode: "stack", xaxis: { range: [0, 1], title: { text: "traffic share" },
        gridcolor: "#eef0f4" }, margin: { l: 90, r: 16, t: 16, b: 48 } });
    } else { emptyNote(ab, "No tenant runs an A/B test."); }

    var metricsEl = document.getElementById("staff-metrics-chart");
    var traces = [];
    data.ab_tests.forEach(function (t, i) {
      var bars = rateBars((t.metrics && t.metrics.versions) || []);
      if (!bars.x.length) { return; }
      traces.push({ type: "bar", name: t.tenant, x: bars.x, y: bars.y,
        marker: { color: COLORS[i % COLORS.length] },
        error_y: { type: "data", symmetric: false, array: bars.hi, arrayminus: bars.lo } });
    });
    if (traces.length) {
      draw(metricsEl, traces, { barmode: "group", xaxis: { type: "category" },
        yaxis: { title: { text: "thumbs-up rate (95% CI)" }, range: [0, 1.15],
          gridcolor: "#eef0f4" } });
    } else { emptyNote(metricsEl, "No per-version feedback yet."); }
  }

  // ---- wiring -----------------------------------------------------------------------------

  function init() {
    var overview = document.getElementById("feedback-chart");
    if (overview) {
      getJSON(overview.getAttribute("data-src")).then(function (data) {
        feedbackChart(overview, data.feedback);
        var pie = document.getElementById("ab-chart");
        if (pie) { abPie(pie, data.ab_test); }
      });
    }
    var live = document.querySelector("[data-job-live]");
    if (live) { jobLive(live); }
    var adapters = document.getElementById("version-metrics-chart");
    if (adapters) {
      getJSON(adapters.getAttribute("data-src")).then(function (data) {
        versionMetricsChart(adapters, data.metrics);
      });
    }
    var editor = document.getElementById("ab-form");
    if (editor) { abEditor(editor); }
    var staff = document.getElementById("staff-charts");
    if (staff) { getJSON(staff.getAttribute("data-src")).then(staffCharts); }
    var adminCurve = document.getElementById("admin-loss-chart");
    if (adminCurve) {
      getJSON(adminCurve.getAttribute("data-src")).then(function (data) {
        lossChart(adminCurve, data.curves);
        marginChart(document.getElementById("admin-margin-chart"), data.curves.dpo);
      });
    }
    // Method and preset switch the training form's numbers to the method's defaults on the
    // tenant's base (the server's method-defaults).
    var trainForm = document.getElementById("train-form");
    if (trainForm) { trainingForm(trainForm); }
  }

  function trainingForm(form) {
    var defaults = JSON.parse(document.getElementById("method-defaults").textContent);
    var presets = JSON.parse(document.getElementById("presets").textContent);
    var method = form.querySelector("[name=method]");
    var preset = form.querySelector("[name=preset]");
    function set(name, value) {
      var input = form.querySelector("[name=" + name + "]");
      if (input && value !== undefined) { input.value = value; }
    }
    function showFor(m) {
      form.querySelectorAll("[data-only]").forEach(function (el) {
        // The input names its methods ("dpo kto"); its whole field row is hidden or shown.
        var row = el.closest(".field") || el;
        row.hidden = el.getAttribute("data-only").split(" ").indexOf(m) < 0;
      });
    }
    method.addEventListener("change", function () {
      var d = defaults[method.value];
      Object.keys(d).forEach(function (k) { set(k, d[k]); });
      if (preset.value) { preset.dispatchEvent(new Event("change")); }
      showFor(method.value);
    });
    preset.addEventListener("change", function () {
      var p = presets[preset.value] || defaults[method.value];
      Object.keys(p).forEach(function (k) { set(k, p[k]); });
    });
    showFor(method.value);
  }

  window.SX = { getJSON: getJSON, draw: draw, lossChart: lossChart };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else { init(); }
})();
