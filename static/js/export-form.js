// The export form shows only the filters that apply to the chosen kind: each filter's box names its kinds in
// data-kinds. A hidden filter is also disabled, so that a value set before the kind changed is not sent.
(function () {
  const form = document.getElementById("export-form");
  if (!form) return;
  const kind = form.elements.kind;

  function show() {
    for (const box of form.querySelectorAll("[data-kinds]")) {
      const applies = box.dataset.kinds.split(" ").includes(kind.value);
      box.hidden = !applies;
      for (const control of box.querySelectorAll("input, select, textarea")) control.disabled = !applies;
    }
  }

  kind.addEventListener("change", show);
  show();
})();
