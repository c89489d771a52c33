// Filters the model table as you type; the page works the same without it.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var table = document.getElementById("models");
  if (!form || !table) { return; }
  var input = document.getElementById("q");
  var status = document.getElementById("search-status");
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  function apply() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search") || "";
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    status.textContent = words.length ? shown + " of " + rows.length + " models match" : "";
  }
  form.hidden = false;
  form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });
  input.addEventListener("input", apply);
  var query = new URLSearchParams(window.location.search).get("q");
  if (query) { input.value = query; }
  apply();
})();
