// Errors of htmx requests, shown where the user acted.
//
// The views answer a refused request (4xx) with an error fragment and HX-Retarget naming the error
// slot next to the control; the htmx config swaps it. This file covers what no view placed: server
// failures (5xx, or any error response without HX-Retarget, such as a CSRF or proxy error page) and
// network failures. Their message goes to the slot the control declares with data-error-slot (on
// itself or an ancestor), else to the page's #page-error, saying what failed (data-error-what). It also clears a control's slot when the
// control asks again, and resets a form marked data-reset-on-error after a refusal, so the form
// shows the values that are applied rather than the ones that were refused.
(function () {
  "use strict";

  function slotFor(elt) {
    var holder = elt && elt.closest ? elt.closest("[data-error-slot]") : null;
    var slot = holder ? document.querySelector(holder.getAttribute("data-error-slot")) : null;
    return slot || document.getElementById("page-error");
  }

  // What the request was for, from data-error-what next to data-error-slot ("Loading the statistics").
  function what(elt) {
    var holder = elt && elt.closest ? elt.closest("[data-error-what]") : null;
    return holder ? holder.getAttribute("data-error-what") : "This request";
  }

  function show(elt, text) {
    var slot = slotFor(elt);
    if (!slot) return;
    var box = document.createElement("div");
    box.className = "error-box";
    box.setAttribute("role", "alert");
    box.textContent = text;
    slot.replaceChildren(box);
  }

  // The element that made the request (in htmx:beforeSwap, detail.elt is the swap's target).
  function requester(event) {
    var config = event.detail.requestConfig;
    return (config && config.elt) || event.detail.elt;
  }

  function unplacedMessage(elt, status) {
    if (status < 500) {
      return what(elt) + " was refused (HTTP " + status + "). " +
        (status === 403 ? "Your session may have changed: reload the page and try again." : "Reload the page and try again.");
    }
    return what(elt) + " failed: the server answered HTTP " + status + ". Try again in a moment; " +
      "if it keeps failing, tell whoever runs evalcompare.";
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var slot = slotFor(requester(event));
    // Only message slots are emptied: the statistics area is its own slot and holds the spinner.
    if (slot && slot.classList.contains("fragment-error")) slot.replaceChildren();
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status < 400 || xhr.getResponseHeader("HX-Retarget")) return;
    event.detail.shouldSwap = false;  // not a fragment made for this page
    show(requester(event), unplacedMessage(requester(event), xhr.status));
  });

  function unreachable(event) {
    show(requester(event), what(requester(event)) + " failed: could not reach the server. " +
      "Check your connection and try again.");
  }

  document.addEventListener("htmx:sendError", unreachable);
  document.addEventListener("htmx:timeout", unreachable);

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = requester(event);
    if (!event.detail.successful && elt && elt.matches && elt.matches("form[data-reset-on-error]")) elt.reset();
  });
})();
