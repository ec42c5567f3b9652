// Toasts: short notices appended to #toasts (role="status", aria-live="polite") by polled fragments,
// out of band, e.g. when a watched run ends. Each has a dismiss button ([data-toast-close]); a toast
// fades away after a while unless the pointer or the keyboard focus is on it. No inline handlers (CSP).
(function () {
  "use strict";

  var FADE_AFTER_MS = 20000;
  var FADE_MS = 300;

  function dismiss(toast) {
    if (!toast || toast.classList.contains("leaving")) return;
    toast.classList.add("leaving");
    setTimeout(function () { toast.remove(); }, FADE_MS);
  }

  function fadeLater(toast) {
    setTimeout(function () {
      if (toast.matches(":hover, :focus-within")) fadeLater(toast);  // being read or used: wait
      else dismiss(toast);
    }, FADE_AFTER_MS);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-toast-close]");
    if (button) dismiss(button.closest("[data-toast]"));
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var toast = document.activeElement && document.activeElement.closest && document.activeElement.closest("[data-toast]");
    if (toast) dismiss(toast);
  });

  function watch() {
    var region = document.getElementById("toasts");
    if (!region) return;
    new MutationObserver(function (mutations) {
      mutations.forEach(function (mutation) {
        mutation.addedNodes.forEach(function (node) {
          if (node.nodeType === 1 && node.matches("[data-toast]")) fadeLater(node);
        });
      });
    }).observe(region, { childList: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
})();
