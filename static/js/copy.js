// "Copy" beside a read-only field: puts the field's text on the clipboard. The Clipboard API works only on
// https or localhost and may be refused; then the text is left selected, so that Ctrl+C (or ⌘C) copies it.
(function () {
  function select(input) {
    input.focus();
    input.select();
    input.setSelectionRange(0, input.value.length);
  }

  function say(button, text) {
    button.textContent = text;
    clearTimeout(button.copyTimer);
    button.copyTimer = setTimeout(() => { button.textContent = "Copy"; }, 2500);
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-button");
    if (!button) return;
    const input = button.closest(".copy-field").querySelector("input");
    try {
      await navigator.clipboard.writeText(input.value);
      say(button, "Copied");
    } catch (error) {
      select(input);
      say(button, "Press Ctrl+C");
    }
  });

  // A click into the field selects all of it, so that a copy by hand never misses a character.
  document.addEventListener("focusin", (event) => {
    if (event.target.matches(".copy-field input")) select(event.target);
  });
})();
