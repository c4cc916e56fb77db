// dpop-broker console, Logs page: the live tail. It asks the broker for the events after the
// last one it saw (GET …/logs/tail?after=…, the page's search and chips) once a second and
// puts them at the top of the table. Bounded: at most 500 rows are kept, and the tail pauses
// after 30 minutes (press the Live tail button to resume). Without JavaScript the page works as a
// search with paging.
"use strict";
// The search form leaves its empty fields (range=&from=&until=) out of the page's URL.
(function () {
  var form = document.querySelector("form.logs-search");
  if (!form || !window.URLSearchParams || !window.FormData) {
    return;
  }
  form.addEventListener("submit", function (e) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (typeof value === "string" && value.trim() !== "") {
        params.append(name, value);
      }
    });
    e.preventDefault();
    var q = params.toString();
    window.location.assign(form.action + (q ? "?" + q : ""));
  });
})();
(function () {
  var button = document.getElementById("logs-tail");
  var status = document.getElementById("logs-tail-status");
  var rows = document.getElementById("logs-rows");
  if (!button || !status || !rows) {
    return;
  }
  var POLL_MS = 1000, MAX_ROWS = 500, MAX_POLLS = 1800;
  var url = button.dataset.tail, cursor = button.dataset.from || "", polls = 0, timer = 0, running = false, seen = 0, started = false;

  // cellLink is a cell's text, linked to the row's filter of kind (its chip) when it has one;
  // label names the kind in the link's title (default: kind).
  function cellLink(row, kind, text, cls, label) {
    var href = row.filters && row.filters[kind];
    var el = document.createElement(href ? "a" : "span");
    if (href) {
      el.href = href;
      el.title = "Filter by " + (label || kind) + " " + text;
    }
    if (cls) {
      el.className = cls;
    }
    el.textContent = text;
    return el;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function td(label) {
    var c = document.createElement("td");
    c.dataset.label = label;
    return c;
  }

  function rowOf(e) {
    var tr = document.createElement("tr");
    tr.dataset.id = e.log_id;
    tr.className = "logs-new" + (e.failed ? " logs-failed" : "");
    var date = td("Date"), a = document.createElement("a");
    a.href = e.href;
    a.textContent = e.date;
    a.setAttribute("aria-label", "Event of " + e.date + ": details");
    date.appendChild(a);
    var type = td("Type");
    type.appendChild(cellLink(e, "type", e.type, "badge " + (e.failed ? "bad" : "ok")));
    type.appendChild(document.createTextNode(" " + (e.description || "")));
    var conn = td("Connection"), client = td("Client"), user = td("User"), err = td("Error / DPoP");
    if (e.connection) { conn.appendChild(cellLink(e, "connection", e.connection)); }
    if (e.client) { client.appendChild(cellLink(e, "client", e.client)); }
    if (e.user) { user.appendChild(cellLink(e, "user", e.user)); }
    if (e.user_name) { user.appendChild(span("logs-sub", e.user_name)); }
    if (e.error) {
      // a management or console refusal's code is found by the api_error chip (details.error.errorCode)
      var chip = e.filters && e.filters.api_error ? "api_error" : "error";
      err.appendChild(cellLink(e, chip, e.error, "badge bad", "error code"));
    }
    if (e.dpop) {
      var b = document.createElement("span");
      b.className = "badge " + (e.dpop === "DPoP" ? "ok" : "warn");
      b.textContent = e.dpop;
      err.appendChild(document.createTextNode(" "));
      err.appendChild(b);
    }
    if (e.message) { err.appendChild(span("logs-message", e.message)); }
    if (e.hint) { err.appendChild(span("logs-hint", e.hint)); }
    [date, type, conn, client, user, err].forEach(function (c) { tr.appendChild(c); });
    return tr;
  }

  function say(text) {
    status.textContent = text;
  }

  function stop(text) {
    running = false;
    clearTimeout(timer);
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Live tail: off";
    say(text);
  }

  function poll() {
    if (!running) {
      return;
    }
    if (++polls > MAX_POLLS) {
      stop("Live tail paused after 30 minutes. Press Live tail to turn it on again.");
      return;
    }
    var u = url + (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(cursor);
    fetch(u, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      // An ended session is sent to the sign-in page: HTML, not the tail's JSON.
      var json = (r.headers.get("Content-Type") || "").indexOf("application/json") === 0;
      if (r.status === 401 || r.status === 403 || r.redirected || !json) {
        throw new Error("Your console session has ended: reload the page to sign in again.");
      }
      return r.json().then(function (a) {
        if (!r.ok) {
          throw new Error(a.error || "The live tail failed (" + r.status + ").");
        }
        return a;
      });
    }).then(function (a) {
      if (!running) {
        return;
      }
      cursor = a.cursor || cursor;
      (a.events || []).forEach(function (e) {
        if (rows.querySelector('tr[data-id="' + e.log_id + '"]')) {
          return; // already on the page (log ids are digits only)
        }
        rows.insertBefore(rowOf(e), rows.firstChild);
        seen++;
      });
      while (rows.rows.length > MAX_ROWS) {
        rows.deleteRow(rows.rows.length - 1);
      }
      if (a.events && a.events.length) {
        var cap = document.querySelector("#logs caption");
        if (cap) { cap.textContent = "Newest first"; }
        say("Live: " + seen + " new event" + (seen === 1 ? "" : "s") + " since the tail started.");
      }
      timer = setTimeout(poll, a.more ? 0 : POLL_MS);
    }).catch(function (err) {
      stop(err && err.message ? err.message : "The live tail stopped.");
    });
  }

  function start() {
    running = true;
    polls = 0;
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Live tail: on";
    say(started ? "Live: resumed." : "Live: new events appear at the top.");
    started = true;
    poll();
  }

  button.textContent = "Live tail: off";
  button.hidden = false;
  button.addEventListener("click", function () {
    if (running) {
      stop("Live tail paused.");
    } else {
      start();
    }
  });
  if (button.dataset.autostart === "true") {
    start();
  }
})();
