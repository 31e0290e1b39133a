// Live updates for queue-pump dashboard: while the tab is visible, each [data-live] region is
// fetched again every data-every ms (the same URL, with X-Live: 1, answers the region's HTML
// alone, rendered and escaped by the server) and replaced when it changed. A hidden tab makes
// no request. A refresh waits while keyboard focus is inside the region, so tabbing to a
// button is never undone under the operator's hands.
(function () {
  "use strict";
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
  if (!regions.length) { return; }
  var timer = null;

  function holdsFocus(region) {
    var focused = document.activeElement;
    return Boolean(focused && focused !== document.body && region.contains(focused));
  }

  function refreshOne(region) {
    if (region.dataset.busy === "1" || holdsFocus(region)) { return; }
    region.dataset.busy = "1";
    fetch(region.getAttribute("data-live"), {
      headers: { "X-Live": "1" }, credentials: "same-origin", cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) { window.location.assign("/login"); return null; }
      return response.text();
    }).then(function (html) {
      // Focus may have moved in while the answer was on its way: keep it, try next time.
      if (html === null || holdsFocus(region)) { return; }
      if (html !== region.dataset.last) {
        region.innerHTML = html;
        region.dataset.last = html;
      }
      region.dataset.refreshed = String(Number(region.dataset.refreshed || "0") + 1);
      region.removeAttribute("data-stale");
    }).catch(function () {
      region.setAttribute("data-stale", "1");
    }).then(function () {
      region.dataset.busy = "0";
    });
  }

  function refresh() {
    if (document.visibilityState !== "visible") { return; }
    regions.forEach(refreshOne);
  }

  function start() {
    if (timer === null) {
      var every = Number(regions[0].getAttribute("data-every")) || 2000;
      timer = window.setInterval(refresh, every);
    }
  }

  function stop() {
    if (timer !== null) { window.clearInterval(timer); timer = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { refresh(); start(); } else { stop(); }
  });
  if (document.visibilityState === "visible") { start(); }
}());
