// The chat page: the labeler's turns go to the API; each reply streams in as server-sent events.
(function () {
  const root = document.getElementById("chat");
  if (!root) return;
  const data = JSON.parse(document.getElementById("chat-data").textContent);
  const csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  const list = document.getElementById("messages");
  const errorBox = document.getElementById("chat-error");
  const form = document.getElementById("turn-form");
  const textArea = document.getElementById("turn-text");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const end = document.getElementById("end-chat");
  const turnsLeft = document.getElementById("turns-left");
  let chat = data.conversation;
  let source = null;
  let busy = false;

  const messageUrl = (id, action) => data.urls.message.replace("/0/", `/${id}/`) + (action ? `${action}/` : "");
  const last = () => chat.messages[chat.messages.length - 1];
  const writing = (message) => message && (message.state === "pending" || message.state === "streaming");

  const call = (method, url, body) => window.replies.call(method, url, body, csrf);

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  async function act(work) {
    if (busy) return;
    busy = true;
    showError("");
    try {
      await work();
    } catch (error) {
      showError(error.message);
      if (error.status === 409) await reload();  // another tab moved the chat on: show where it stands
    } finally {
      busy = false;
      render();
    }
  }

  async function reload() {
    try { chat = await call("GET", data.urls.detail); } catch (error) { showError(error.message); }
  }

  function status(message) {
    if (message.state === "pending") return "Waiting for the model…";
    if (message.state === "streaming") return "Writing…";
    if (message.state === "failed") return message.error;
    const notes = [];
    if (message.state === "stopped") notes.push("Stopped.");
    if (message.finish_reason === "length") notes.push("Cut at the length limit.");
    if (message.rewritten) notes.push("Rewritten by you; the model's reply is kept beside it.");
    return notes.join(" ");
  }

  function renderMessage(message) {
    const node = document.createElement("div");
    node.className = `turn ${message.role} state-${message.state}`;
    node.dataset.id = message.id;
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = message.role === "user" ? "You" : "Model";
    const text = document.createElement("p");
    text.className = "turn-text";
    text.textContent = message.text;
    const note = document.createElement("p");
    note.className = message.state === "failed" ? "turn-status error" : "turn-status help";
    note.textContent = message.role === "assistant" ? status(message) : "";
    node.append(role, text, note);
    if (message === last() && message.role === "assistant" && !writing(message) && chat.state === "open") {
      const tools = document.createElement("div");
      tools.className = "turn-tools";
      tools.append(
        button("Regenerate", () => act(async () => {
          await call("POST", messageUrl(message.id, "regenerate"));
          await reload();
        })),
        button("Rewrite", () => rewrite(node, message)),
      );
      node.append(tools);
    }
    return node;
  }

  function button(label, onClick) {
    const node = document.createElement("button");
    node.type = "button";
    node.className = "secondary";
    node.textContent = label;
    node.addEventListener("click", onClick);
    return node;
  }

  function rewrite(node, message) {
    const editor = document.createElement("textarea");
    editor.rows = 4;
    editor.value = message.text;
    editor.setAttribute("aria-label", "Your version of the reply");
    // Kept open, with what was typed, until the rewrite is saved.
    const save = button("Save my version", async () => {
      showError("");
      try {
        Object.assign(message, await call("POST", messageUrl(message.id, "rewrite"), { text: editor.value }));
        render();
      } catch (error) {
        showError(error.message);
        if (error.status === 409) {
          await reload();
          render();
        }
      }
    });
    const cancel = button("Cancel", render);
    node.querySelector(".turn-text").replaceWith(editor);
    node.querySelector(".turn-tools").replaceChildren(save, cancel);
    editor.focus();
  }

  function render() {
    list.replaceChildren(...chat.messages.map(renderMessage));
    list.hidden = chat.messages.length === 0;
    const current = last();
    const userTurns = chat.messages.filter((m) => m.role === "user").length;
    const open = chat.state === "open";
    send.disabled = busy || !open || writing(current) || userTurns >= chat.max_turns;
    end.disabled = busy || !open || writing(current);
    stop.hidden = !writing(current);
    turnsLeft.textContent = `${chat.max_turns - userTurns} of ${chat.max_turns} turns left`;
    if (writing(current)) follow(current);
  }

  // A reply as it is written: text events append, the end event brings the stored reply.
  function follow(reply) {
    if (source && source.messageId === reply.id) return;
    if (source) source.close();
    const id = reply.id;
    // The message as the chat holds it now: a reload (after a 409) replaces the objects.
    const message = () => chat.messages.find((m) => m.id === id) || reply;
    const node = () => list.querySelector(`[data-id="${id}"]`);
    const note = (text) => { if (node()) node().querySelector(".turn-status").textContent = text; };
    source = window.replies.follow(reply.stream, reply.text, {
      onText: (text) => {
        Object.assign(message(), { text, state: "streaming" });
        if (node()) node().querySelector(".turn-text").textContent = text;
      },
      onNote: note,
      onEnd: (stored) => {
        Object.assign(message(), stored);
        source = null;
        render();
      },
      onLost: () => {
        source = null;
        showError("The connection to the reply was lost; reload the page to pick it up where it is.");
      },
    });
    source.messageId = id;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (send.disabled) return;  // Ctrl+Enter while a reply is written
    const current = last();
    act(async () => {
      await call("POST", data.urls.send, { text: textArea.value, after: current ? current.id : null });
      textArea.value = "";
      await reload();
    });
  });
  stop.addEventListener("click", () => {
    const current = last();
    if (current) act(() => call("POST", messageUrl(current.id, "stop")));
  });
  end.addEventListener("click", () => {
    if (!window.confirm("End the chat? It can't be continued afterwards.")) return;
    act(async () => {
      chat = await call("POST", data.urls.end, { time_spent_seconds: window.taskSeconds() });
      document.getElementById("next-form").submit();
    });
  });

  render();
})();
