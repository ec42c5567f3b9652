// Keyboard and ARIA behaviour of the run-selector combobox. htmx fetches the options; this file
// only moves the active option (arrow keys), picks it (Enter) and closes the list (Escape, click away).
(function () {
  "use strict";

  function optionsOf(list) {
    return Array.from(list.querySelectorAll("[role=option]"));
  }

  function listOf(input) {
    return document.getElementById(input.getAttribute("aria-controls"));
  }

  function activate(input, items, index) {
    items.forEach(function (item, i) {
      item.setAttribute("aria-selected", i === index ? "true" : "false");
    });
    if (index >= 0 && items[index]) {
      input.setAttribute("aria-activedescendant", items[index].id);
      items[index].scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  function close(input) {
    var list = listOf(input);
    if (list) list.innerHTML = "";
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("[role=combobox]")) return;
    var list = listOf(input);
    var items = optionsOf(list);
    var current = items.findIndex(function (item) { return item.getAttribute("aria-selected") === "true"; });
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!items.length) { htmx.trigger(input, "focus"); return; }
      var step = event.key === "ArrowDown" ? 1 : -1;
      activate(input, items, (current + step + items.length) % items.length);
    } else if (event.key === "Enter") {
      event.preventDefault();
      var chosen = items[current >= 0 ? current : (items.length === 1 ? 0 : -1)];
      if (chosen) chosen.querySelector("a").click();
    } else if (event.key === "Escape") {
      close(input);
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var list = event.detail.target;
    if (!list || list.getAttribute("role") !== "listbox") return;
    var input = document.querySelector('[aria-controls="' + list.id + '"]');
    if (!input) return;
    var items = optionsOf(list);
    input.setAttribute("aria-expanded", list.children.length ? "true" : "false");
    // A pasted run id finds exactly that run: make it the active option so Enter adds it.
    activate(input, items, items.length === 1 && /^[0-9a-f-]{32,36}$/i.test(input.value.trim()) ? 0 : -1);
  });

  document.addEventListener("click", function (event) {
    document.querySelectorAll("[data-combobox]").forEach(function (box) {
      if (!box.contains(event.target)) {
        var input = box.querySelector("[role=combobox]");
        if (input && input.getAttribute("aria-expanded") === "true") close(input);
      }
    });
  });
})();
