// mlhub console: charts from JSON blocks (plotly.js, served locally) and live job pages. No inline scripts.
"use strict";

function drawCharts() {
  if (typeof Plotly === "undefined") return;
  document.querySelectorAll("div[data-chart]").forEach(function (el) {
    var data = document.getElementById(el.dataset.chart);
    if (!data) return;
    var traces = JSON.parse(data.textContent);
    var kind = el.dataset.kind || "lines";
    traces.forEach(function (t) {
      if (!t.type) { t.type = "scatter"; t.mode = kind; }
    });
    var layout = {
      margin: {t: 20, r: 20, b: 50, l: 60}, height: kind === "heatmap" ? 360 : 420,
      xaxis: {title: {text: el.dataset.xtitle || ""}}, yaxis: {title: {text: el.dataset.ytitle || ""}},
      legend: {orientation: "h", y: -0.2}, showlegend: kind !== "heatmap"
    };
    if (kind === "heatmap") { layout.yaxis.autorange = "reversed"; }
    if (kind === "markers" && traces.length > 1) { sideBySide(traces, layout); }
    Plotly.newPlot(el, traces, layout, {responsive: true, displaylogo: false});
    el.dataset.drawn = "true";
  });
}

// parameter vs score: one panel per parameter, each on its own x axis (log where the values span decades)
function sideBySide(traces, layout) {
  var n = traces.length, gap = 0.03;
  traces.forEach(function (t, i) {
    var axis = i === 0 ? "xaxis" : "xaxis" + (i + 1);
    t.xaxis = i === 0 ? "x" : "x" + (i + 1);
    var xs = t.x.filter(function (v) { return typeof v === "number"; });
    var positive = xs.length === t.x.length && xs.every(function (v) { return v > 0; });
    var spread = positive ? Math.max.apply(null, xs) / Math.min.apply(null, xs) : 0;
    layout[axis] = {domain: [i / n + (i ? gap : 0), (i + 1) / n - (i < n - 1 ? gap : 0)],
                    title: {text: t.name}, type: spread > 100 ? "log" : "-", anchor: "y"};
  });
  layout.showlegend = false;
}

function followJob() {
  var live = document.getElementById("job-live");
  if (!live || live.dataset.final === "true") return;
  var after = live.dataset.after || "0";
  var state = document.getElementById("job-state");
  var progress = document.getElementById("job-progress");
  var logs = document.getElementById("job-logs");
  var error = document.getElementById("job-error");
  function tick() {
    fetch(live.dataset.live + "?after_id=" + encodeURIComponent(after), {credentials: "same-origin"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (doc) {
        state.textContent = doc.state;
        state.className = "state state-" + doc.state;
        progress.textContent = doc.progress;
        if (doc.logs) { logs.textContent += doc.logs; logs.scrollTop = logs.scrollHeight; }
        if (error) error.textContent = doc.error || "";
        after = String(doc.after_id);
        if (doc.final) {
          live.dataset.final = "true";
          var cancel = document.querySelector("#cancel-form button");
          var retry = document.querySelector("#retry-form button");
          if (cancel) cancel.disabled = true;
          if (retry) retry.disabled = ["failed", "dead", "cancelled"].indexOf(doc.state) < 0;
          return;
        }
        setTimeout(tick, 1000);
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 1000);
}

function followQueues() {
  var table = document.getElementById("queues");
  if (!table || !table.dataset.live) return;
  function tick() {
    fetch(table.dataset.live, {credentials: "same-origin"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (doc) {
        doc.queues.forEach(function (q) {
          var row = table.querySelector('tr[data-queue="' + q.name + '"]');
          if (!row) return;
          ["pending", "running", "total"].forEach(function (k) {
            var cell = row.querySelector("td." + k);
            if (cell) cell.textContent = String(q[k]);
          });
        });
        setTimeout(tick, 5000);
      })
      .catch(function () { setTimeout(tick, 15000); });
  }
  setTimeout(tick, 5000);
}

document.addEventListener("DOMContentLoaded", function () {
  drawCharts();
  followJob();
  followQueues();
});
