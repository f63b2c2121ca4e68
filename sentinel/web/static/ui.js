// Sentinel status UI: small progressive enhancements. Every page works without this file.
// 1. The overview refreshes after each evaluation: /ui/live answers the evaluation
//    generation; when it changes, the page is fetched again and only its [data-live]
//    parts are swapped (no full-page flicker; the filter form stays put, and a part
//    holding the keyboard focus waits until focus leaves it).
// 2. The overview's filter form filters rows as you type, without a round trip; when the
//    overview is split into pages ([data-paged]), the rows shown are one page of many,
//    so the filtered first page is also fetched from the server (after a pause in
//    typing) and the address updated to it once it is shown.
// 3. "Copy query" buttons.
(function () {
  "use strict";

  function rowMatches(row, f) {
    var cells = row.cells;
    if (f.service && cells[0].textContent.trim() !== f.service) return false;
    if (f.status && !row.classList.contains("s-" + f.status)) return false;
    if (f.severity && cells[6].textContent.trim() !== f.severity) return false;
    if (f.q) {
      var text = (cells[0].textContent + " " + cells[1].textContent).toLowerCase();
      if (text.indexOf(f.q) < 0) return false;
    }
    return true;
  }

  function applyFilter() {
    var form = document.querySelector("form.filters");
    var table = document.querySelector("table.slos");
    if (!form || !table) return;
    var f = {
      q: (form.elements.q.value || "").trim().toLowerCase(),
      service: (form.elements.service.value || "").trim(),
      status: form.elements.status.value,
      severity: form.elements.severity.value
    };
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      rows[i].hidden = !rowMatches(rows[i], f);
    }
  }

  function swapLive(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live]").forEach(function (el) {
      // A keyboard user's focus inside a part is never pulled away: that part waits.
      if (el.contains(document.activeElement) && document.activeElement !== document.body) return;
      var fresh = el.id && doc.getElementById(el.id);
      if (fresh) el.replaceWith(document.importNode(fresh, true));
    });
    var main = doc.getElementById("main");
    if (main) document.getElementById("main").dataset.generation = main.dataset.generation;
    applyFilter();
  }

  // The overview is fetched by the refresh and by a filter typed on a paged table; only
  // the answer to the latest request is shown (answers can overtake each other, and a
  // refresh asked before a filter would put the unfiltered page back).
  var latest = 0;
  // The address the table should show: a typed filter sets it at once, so a refresh asks
  // for it too. The address bar follows when an answer is swapped in; a fetch that fails
  // leaves both the table and the address as they were.
  var wanted = location.pathname + location.search;

  function fetchPage(url) {
    var mine = ++latest;
    return fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (!html || mine !== latest) return;
        swapLive(html);
        if (url !== location.pathname + location.search) history.replaceState(null, "", url);
      });
  }

  function startRefresh() {
    var main = document.getElementById("main");
    if (!main || !document.getElementById("slo-table")) return;
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch("/ui/live", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (gen) {
          if (gen === null || gen.trim() === main.dataset.generation) return null;
          return fetchPage(wanted);
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, 2000);
  }

  function startFilter() {
    var form = document.querySelector("form.filters");
    if (!form) return;
    var timer = null;
    function filterAll() {
      var query = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (String(value).trim()) query.append(name, String(value).trim());
      });
      wanted = "/" + (query.toString() ? "?" + query.toString() : "");
      fetchPage(wanted).catch(function () {});
    }
    function changed() {
      applyFilter();
      if (!document.querySelector("#slo-table[data-paged]")) return;
      clearTimeout(timer);
      timer = setTimeout(filterAll, 300);
    }
    form.addEventListener("input", changed);
    form.addEventListener("change", changed);
  }

  function startCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var text = document.getElementById(button.dataset.copy).textContent;
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () {});
        } else {
          var area = document.createElement("textarea");
          area.value = text;
          document.body.appendChild(area);
          area.select();
          document.execCommand("copy");
          area.remove();
          done();
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    startFilter();
    applyFilter();
    startRefresh();
    startCopy();
  });
})();
