// Polls a progress endpoint and fills the page's <progress> bar; reloads when the work is done.
(function () {
  const box = document.getElementById("progress");
  if (!box) return;
  const bar = box.querySelector("progress");
  const text = box.querySelector(".progress-text");
  async function poll() {
    try {
      const response = await fetch(box.dataset.url, { headers: { Accept: "application/json" } });
      const state = await response.json();
      if (state.finished) { window.location.reload(); return; }
      bar.value = state.percent;
      if (state.state === "running") {
        text.textContent = `${state.percent}% · ${state.text}`;
      }
    } catch (error) {
      text.textContent = "Lost contact with the server; retrying…";
    }
    setTimeout(poll, 1000);
  }
  poll();
  // Pages with curves redraw them now and then while the work runs.
  if (box.dataset.reloadSeconds) setTimeout(() => window.location.reload(), 1000 * box.dataset.reloadSeconds);
})();
