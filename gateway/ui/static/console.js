// taxoforge console: hand-written, no build step, nothing fetched from elsewhere.
// Live job progress over the console's Server-Sent Events stream, and confirm prompts.
"use strict";

(function () {
  function text(el, value) {
    if (el) el.textContent = value;
  }

  function fmt(n) {
    return Number(n || 0).toLocaleString("en-US");
  }

  function stageCounts(view) {
    var done = 0;
    var failed = 0;
    (view.stages || []).forEach(function (s) {
      done += s.done || 0;
      failed += s.failed || 0;
    });
    return { done: done, failed: failed };
  }

  // Update every element carrying data-job="<id>" from one JobView.
  function apply(view) {
    var rows = document.querySelectorAll('[data-job="' + view.id + '"]');
    rows.forEach(function (row) {
      var state = row.querySelector("[data-field=state]");
      if (state) {
        state.textContent = view.state;
        state.className = "state state-" + view.state;
      }
      text(row.querySelector("[data-field=finished]"), fmt(view.finished));
      text(row.querySelector("[data-field=planned]"), fmt(view.planned));
      var usage = view.usage || {};
      text(row.querySelector("[data-field=tokens]"),
        fmt((usage.prompt_tokens || 0) + (usage.completion_tokens || 0)));
      text(row.querySelector("[data-field=cost]"), "$" + Number(usage.cost_usd || 0).toFixed(4));
      var bar = row.querySelector("progress[data-field=progress]");
      if (bar) {
        bar.max = Math.max(1, view.planned || 0);
        bar.value = Math.min(bar.max, view.finished || 0);
      }
      (view.stages || []).forEach(function (s) {
        var cells = row.querySelectorAll('[data-stage="' + s.stage + '"]');
        cells.forEach(function (cell) {
          text(cell.querySelector("[data-field=done]"), fmt(s.done));
          text(cell.querySelector("[data-field=failed]"), fmt(s.failed));
        });
      });
    });
  }

  function watch(el) {
    var url = el.getAttribute("data-events");
    if (!url || typeof EventSource === "undefined") return;
    var source = new EventSource(url);
    source.addEventListener("progress", function (e) {
      apply(JSON.parse(e.data));
    });
    source.addEventListener("end", function (e) {
      var view = JSON.parse(e.data);
      apply(view);
      source.close();
      // A finished job's page has more to show (composition, judge health, files).
      if (el.getAttribute("data-reload-on-end") === "true") window.location.reload();
    });
    source.onerror = function () {
      // The stream closes after "end"; a dropped connection is not retried forever.
      source.close();
    };
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-events]").forEach(watch);
    confirmForms();
  });
})();
