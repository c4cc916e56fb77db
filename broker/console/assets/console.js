// dpop-broker console: progressive enhancement only (every page works without it).
// Forms with data-confirm ask before they submit.
"use strict";
document.addEventListener("submit", function (e) {
  var f = e.target;
  if (f instanceof HTMLFormElement && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
    e.preventDefault();
  }
});
