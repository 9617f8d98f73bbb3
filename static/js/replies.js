// Shared by the task pages: JSON calls to the API, and replies the model writes, read as server-sent events.
window.replies = (function () {
  async function call(method, url, body, csrf) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let payload = null;
    try { payload = await response.json(); } catch (error) { payload = null; }
    if (!response.ok) {
      const error = new Error((payload && payload.detail) || `The server answered ${response.status}; try again.`);
      error.status = response.status;
      throw error;
    }
    return payload;
  }

  // Follow a reply on from the `text` already shown: onText(text so far), onNote(words), onEnd(stored reply).
  // The browser reconnects by itself after a dropped connection, from the last part it received.
  // Offsets count characters as the server does (code points), not JavaScript's UTF-16 units.
  function follow(streamUrl, text, { onText, onNote, onEnd, onLost }) {
    const source = new EventSource(`${streamUrl}?offset=${Array.from(text).length}`);
    source.addEventListener("waiting", () => onNote("Waiting for the model…"));
    source.addEventListener("text", (event) => {
      const part = JSON.parse(event.data);
      text = Array.from(text).slice(0, part.offset).join("") + part.text;
      onText(text, part);
      onNote("Writing…");
    });
    source.addEventListener("end", (event) => {
      source.close();
      onEnd(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) onLost();
      else onNote("Reconnecting…");
    });
    return source;
  }

  return { call, follow };
})();
