/* Console behaviour, no framework: the confirmation dialog (focus kept inside, Esc
   cancels, the confirm button unlocked only by the exact table name), focus after a swap,
   and the display of refusals that come back as 4xx fragments. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var FOCUSABLE = [
    "a[href]", "button:not([disabled])", "input:not([disabled]):not([type=hidden])",
    "select:not([disabled])", "textarea:not([disabled])", "[tabindex]:not([tabindex='-1'])"
  ].join(",");

  function focusables(container) {
    return Array.prototype.filter.call(container.querySelectorAll(FOCUSABLE), function (el) {
      return el.offsetWidth > 0 || el.offsetHeight > 0 || el === document.activeElement;
    });
  }

  function syncConfirm(input) {
    var form = input.form;
    var button = form && form.querySelector("[data-confirm-button]");
    if (!button) return;
    var matches = input.value === input.getAttribute("data-expected");
    button.disabled = !matches;
    input.setAttribute("aria-invalid", input.value && !matches ? "true" : "false");
    var hint = form.querySelector("[data-match-hint]");
    if (hint) {
      // The hint's own words while it does not match; data-matched once it does.
      if (!hint.hasAttribute("data-waiting")) hint.setAttribute("data-waiting", hint.textContent);
      hint.textContent = matches
        ? (hint.getAttribute("data-matched") || "The name matches. Confirming executes the operation.")
        : hint.getAttribute("data-waiting");
    }
  }

  function openDialog(dialog, opener) {
    dialog._opener = opener;
    dialog.showModal();
    var input = dialog.querySelector("input[data-expected]");
    if (input) { syncConfirm(input); input.focus(); }
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-open-dialog"));
      if (dialog) openDialog(dialog, opener);
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      closer.closest("dialog").close("cancel");
      return;
    }
    // "Close" empties the operation panel of the ingestion page; elsewhere it is a link.
    var closePanel = event.target.closest("[data-close-panel]");
    var panel = closePanel && closePanel.closest("[data-dismissible]");
    if (panel) {
      event.preventDefault();
      panel.innerHTML = "";
      var heading = document.querySelector("h1");
      if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
    }
  });

  document.addEventListener("input", function (event) {
    if (event.target.matches("input[data-expected]")) syncConfirm(event.target);
    // Typing in one kind of a selective refresh's scope chooses that kind.
    var kind = event.target.closest("[data-scope-kind]");
    if (kind && event.target.type !== "radio") {
      var radio = kind.querySelector("input[type=radio]");
      if (radio) radio.checked = true;
    }
  });

  // A confirmation on the page itself (the batch preview's typed count) is locked until it
  // matches, like the dialogs: from the start, and again when the browser restores a form.
  function syncAll(root) {
    Array.prototype.forEach.call(root.querySelectorAll("input[data-expected]"), syncConfirm);
  }
  syncAll(document);
  window.addEventListener("pageshow", function () { syncAll(document); });
  document.addEventListener("htmx:load", function (event) { syncAll(event.detail.elt); });

  // A closed dialog (Esc, Cancel) forgets what was typed and gives focus back to its opener.
  document.addEventListener("close", function (event) {
    var dialog = event.target;
    if (!(dialog instanceof HTMLDialogElement)) return;
    var form = dialog.querySelector("form");
    if (form) form.reset();
    var input = dialog.querySelector("input[data-expected]");
    if (input) syncConfirm(input);
    if (dialog._opener && document.body.contains(dialog._opener)) dialog._opener.focus();
  }, true);

  // A modal dialog makes the page inert; this also keeps Tab from leaving for the browser UI.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Tab") return;
    var dialog = document.querySelector("dialog[open]");
    if (!dialog) return;
    var items = focusables(dialog);
    if (!items.length) return;
    var first = items[0];
    var last = items[items.length - 1];
    var inside = dialog.contains(document.activeElement);
    if (event.shiftKey && (!inside || document.activeElement === first)) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (!inside || document.activeElement === last)) {
      event.preventDefault();
      first.focus();
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) event.target.form.requestSubmit();
  });

  // With DEBUG on, django-htmx's debug script replaces the whole page with any 400, 403,
  // 404 or 500 answer (to show Django's error page). A refusal the console renders is not
  // an error page: keep that script from seeing it (it listens on document, this runs
  // first, on window, while the event travels down).
  window.addEventListener("htmx:beforeOnLoad", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status >= 400 && xhr.getResponseHeader("X-Console-Fragment")) {
      event.stopPropagation();
    }
  }, true);

  // Refusals (403, 409, 423, 429...) come back as fragments marked X-Console-Fragment:
  // swap those like a success. Any other error response is not swapped into the page.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status >= 400 && xhr.getResponseHeader("X-Console-Fragment")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  var notice = function (text) {
    var box = document.getElementById("server-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  };
  document.addEventListener("htmx:responseError", function (event) {
    notice("The server failed to answer (" + event.detail.xhr.status + "). " +
      "Reload the page to see the current state before trying again.");
  });
  document.addEventListener("htmx:sendError", function () {
    notice("The server cannot be reached. Check the connection, then reload the page.");
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    notice("");
    var target = event.detail.target;
    if (target && target.id === "operation-panel") {
      var first = target.querySelector("[data-autofocus]");
      if (first) first.focus();
    }
  });
})();
