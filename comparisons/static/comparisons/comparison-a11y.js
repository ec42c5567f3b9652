// The comparison page for keyboard and screen-reader users (no inline script: the page's CSP).
// 1. Focus survives htmx swaps: after the runs or filters change, focus goes back to the equivalent
//    control in the new fragment instead of falling to <body>.
// 2. Filter selects apply when chosen, not on every arrow key: a change made with the keyboard
//    waits for Enter or for focus to leave the select; a mouse choice applies at once.
// 3. A polite live region reads what the new rows are ("100 datapoints shown …").
(function () {
  "use strict";

  var FILTER_SELECT = "#filters select";
  var BROWSE_KEYS = ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown"];
  var restoreFocus = null;

  function focusTarget(element) {
    if (!element || element === document.body || !element.closest) return null;
    if (element.closest("#filters") && element.name) return '#filters [name="' + element.name + '"]';
    if (element.closest("#run-chips")) return "#run-chips";
    if (element.closest("[data-combobox]")) return "#run-search";
    return null;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "comparison") restoreFocus = focusTarget(document.activeElement);
  });

  document.addEventListener("htmx:afterSettle", function () {
    if (restoreFocus) {
      var element = document.querySelector(restoreFocus);
      restoreFocus = null;
      if (element && document.activeElement !== element) element.focus({ preventScroll: true });
    }
    announce();
  });

  // --- filter selects --------------------------------------------------------------------------
  var keyed = new WeakSet();

  function apply(select) {
    if (!select.dataset.pending) return;
    delete select.dataset.pending;
    keyed.delete(select);
    select.dataset.applying = "1";
    select.dispatchEvent(new Event("change", { bubbles: true }));
    delete select.dataset.applying;
  }

  document.addEventListener("keydown", function (event) {
    var select = event.target;
    if (!select.matches || !select.matches(FILTER_SELECT)) return;
    if (BROWSE_KEYS.indexOf(event.key) >= 0 || (event.key.length === 1 && event.key !== " ")) {
      keyed.add(select);
    } else if (event.key === "Enter" && select.dataset.pending) {
      event.preventDefault();
      apply(select);
    }
  }, true);

  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select.matches || !select.matches(FILTER_SELECT) || select.dataset.applying) return;
    if (keyed.has(select)) {
      event.stopPropagation();  // htmx listens on the form: it waits for Enter or for focus to leave
      select.dataset.pending = "1";
    }
  }, true);

  document.addEventListener("focusout", function (event) {
    var select = event.target;
    if (select.matches && select.matches(FILTER_SELECT)) apply(select);
  }, true);

  // --- the live region -------------------------------------------------------------------------
  function announce() {
    var region = document.getElementById("results-announcer");
    var fresh = Array.from(document.querySelectorAll("[data-announce]:not([data-announced])"));
    if (!region || !fresh.length) return;
    fresh.forEach(function (element) { element.setAttribute("data-announced", ""); });
    region.textContent = "";
    // A beat later, so the same words twice in a row are read twice.
    window.setTimeout(function () { region.textContent = fresh[fresh.length - 1].getAttribute("data-announce"); }, 50);
  }

  document.addEventListener("DOMContentLoaded", function () {
    // What the page opened with is not news: only what later swaps bring is read.
    document.querySelectorAll("[data-announce]").forEach(function (element) { element.setAttribute("data-announced", ""); });
  });
})();
