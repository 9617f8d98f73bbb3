// Task pages: timer, shortcuts, extra chat turns, the ranking board and errors that clear once fixed.

// Whether a key pressed in `target` is typing, which no page shortcut may take.
function isTyping(target) {
  return /^(TEXTAREA|SELECT)$/.test(target.tagName) || target.isContentEditable
    || (target.tagName === "INPUT" && !["radio", "checkbox"].includes(target.type));
}

// Every task page: the timer (seconds on the page, sent with the answer, or with a chat when it ends),
// Ctrl+Enter to submit the page's form (the answer; on a chat, the turn), and the shortcuts behind "?".
window.taskSeconds = (function () {
  const timer = document.getElementById("timer");
  if (!timer) return null;
  const spent = document.querySelector("input[name=time_spent]");
  const started = Date.now() - 1000 * (parseInt(spent && spent.value, 10) || 0);
  const seconds = () => Math.floor((Date.now() - started) / 1000);
  function tick() {
    if (spent) spent.value = seconds();
    timer.textContent = `${Math.floor(seconds() / 60)}:${String(seconds() % 60).padStart(2, "0")}`;
  }
  tick();
  setInterval(tick, 1000);

  const form = document.querySelector("form[data-ctrl-enter]");
  const help = document.getElementById("shortcuts");
  const toggleHelp = () => { help.hidden = !help.hidden; };
  document.querySelectorAll("[data-toggle-help]").forEach((b) => b.addEventListener("click", toggleHelp));
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = isTyping(target);
    // Not from a text area of its own (a chat's rewrite of a reply): that one is saved with its button.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && form
        && (target.tagName !== "TEXTAREA" || form.contains(target))) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "?" && !typing) {
      toggleHelp();
    } else if (event.key === "Escape") {
      help.hidden = true;
    }
  });
  return seconds;
})();

(function () {
  const form = document.getElementById("task-form");
  if (!form) return;

  // Demonstrations: the model's draft goes into the reply on request, and the answer records it.
  const insert = document.querySelector("[data-insert-suggestion]");
  if (insert) {
    const reply = document.querySelector("textarea[name=assistant_1]");
    insert.hidden = false;
    insert.addEventListener("click", () => {
      if (reply.value.trim() && !window.confirm("Replace what you have written with the suggestion?")) return;
      reply.value = document.getElementById("suggestion-text").content.textContent;
      document.querySelector("input[name=used_suggestion]").value = "True";
      reply.focus();
    });
  }

  // Chat demonstrations: extra turns stay hidden until asked for.
  const addTurn = document.querySelector("[data-add-turn]");
  if (addTurn) {
    const hidden = () => document.querySelectorAll(".turn-pair[data-empty]");
    hidden().forEach((pair) => { pair.hidden = true; });
    addTurn.addEventListener("click", () => {
      const next = hidden()[0];
      if (next) {
        next.hidden = false;
        next.removeAttribute("data-empty");
        next.querySelector("textarea").focus();
      }
      addTurn.hidden = hidden().length === 0;
    });
    addTurn.hidden = hidden().length === 0;
  }

  // Ranking board: chips dragged into rank slots, or placed with digit keys; the
  // rank selects in each output card hold the answer and stay in step.
  const board = document.getElementById("board");
  if (!board) return;
  const template = document.getElementById("chips");
  const slots = [...board.querySelectorAll(".slot")];
  const slotFor = (rank) => slots.find((slot) => slot.dataset.rank === String(rank || "")) || slots[0];
  const selectOf = (chip) => document.getElementById(chip.dataset.for);
  function place(chip, rank) {
    slotFor(rank).appendChild(chip);
    const select = selectOf(chip);
    select.value = rank ? String(rank) : "";
    // As if the labeler had chosen it in the select: an error about this rank clears.
    select.dispatchEvent(new Event("change", { bubbles: true }));
  }
  template.content.querySelectorAll(".chip").forEach((chip) => {
    const node = chip.cloneNode(true);
    slotFor(selectOf(node).value).appendChild(node);
    node.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData("text/plain", node.dataset.for);
      event.dataTransfer.effectAllowed = "move";
    });
    node.addEventListener("keydown", (event) => {
      const rank = parseInt(event.key, 10);
      if (rank >= 1 && rank < slots.length) {
        event.preventDefault();
        place(node, rank);
        node.focus();
      } else if (event.key === "0" || event.key === "Backspace") {
        event.preventDefault();
        place(node, "");
        node.focus();
      }
    });
    selectOf(node).addEventListener("change", (event) => {
      const slot = slotFor(event.target.value);
      if (node.parentElement !== slot) slot.appendChild(node);
      const unranked = document.getElementById("board-error");
      if (unranked && !slots[0].querySelector(".chip")) unranked.remove();
    });
  });
  slots.forEach((slot) => {
    slot.addEventListener("dragover", (event) => { event.preventDefault(); slot.classList.add("over"); });
    slot.addEventListener("dragleave", () => slot.classList.remove("over"));
    slot.addEventListener("drop", (event) => {
      event.preventDefault();
      slot.classList.remove("over");
      const chip = board.querySelector(`.chip[data-for="${event.dataTransfer.getData("text/plain")}"]`);
      if (chip) place(chip, slot.dataset.rank);
    });
  });

  // Outputs from the keyboard: j and k move between them; in one, 1-7 rate it, its flags' letters toggle
  // them, n opens its notes (Esc comes back); b goes to the first letter on the board not ranked yet.
  const outputs = [...document.querySelectorAll(".output")];
  const firstChip = () => slots[0].querySelector(".chip") || board.querySelector(".chip");
  function rate(output, value, target) {
    const radio = output.querySelector(`.rating input[type=radio][value="${value}"]`);
    if (!radio) return;
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    if (target.type === "radio") radio.focus();  // arrow keys go on from the rating just set
  }
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.tagName === "TEXTAREA" && event.key === "Escape" && target.closest(".output")) {
      target.closest(".output").focus();
      return;
    }
    if (isTyping(target)) return;
    const output = target.closest(".output");
    const index = outputs.indexOf(output);
    const key = event.key;
    let handled = true;
    if (key === "j" || key === "k") {
      const next = key === "j" ? (index < 0 ? 0 : Math.min(index + 1, outputs.length - 1))
        : (index < 0 ? outputs.length - 1 : Math.max(index - 1, 0));
      outputs[next].focus();
    } else if (key === "b") {
      firstChip().focus();
    } else if (output && /^[1-7]$/.test(key)) {
      rate(output, key, target);
    } else if (output && key === "n") {
      const notes = output.querySelector("details.notes");
      notes.open = true;
      notes.querySelector("textarea").focus();
    } else if (output && output.querySelector(`input[data-key="${key}"]`)) {
      const flag = output.querySelector(`input[data-key="${key}"]`);
      flag.checked = !flag.checked;
      flag.dispatchEvent(new Event("change", { bubbles: true }));
    } else {
      handled = false;
    }
    if (handled) event.preventDefault();
  });
})();

// Errors the server marked beside a field clear as the labeler fixes it: once each control of the marked
// box holds a valid value and one of them differs from what was refused. The summary above the form goes
// with the last of them; errors about the whole answer stay until the next submit.
(function () {
  const form = document.getElementById("task-form");
  if (!form) return;
  const valueOf = (control) => (["radio", "checkbox"].includes(control.type) ? control.checked : control.value);
  const controls = (box) => [...box.querySelectorAll("input, select, textarea")];
  const refused = new Map();
  form.querySelectorAll(".has-error").forEach((box) => {
    controls(box).forEach((control) => refused.set(control, valueOf(control)));
  });
  function clear(event) {
    const box = event.target.closest(".has-error");
    if (!box || !form.contains(box)) return;
    const fields = controls(box);
    if (!fields.every((control) => control.checkValidity())) return;
    if (!fields.some((control) => valueOf(control) !== refused.get(control))) return;
    box.classList.remove("has-error");
    box.querySelectorAll(".error").forEach((error) => error.remove());
    if (!form.querySelector(".has-error")) {
      const summary = document.getElementById("error-summary");
      if (summary) summary.remove();
    }
  }
  form.addEventListener("change", clear);
  form.addEventListener("input", clear);
})();

// Demonstrations: the model suggests a reply for any assistant turn, from the conversation so far.
(function () {
  const section = document.getElementById("demonstration");
  if (!section) return;
  const form = document.getElementById("task-form");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const used = form.querySelector("input[name=suggestions_used]");
  const usedBy = {};  // field name -> the suggestion put there, until the labeler clears the field
  const recordUsed = () => { used.value = Object.values(usedBy).join(","); };
  const value = (name) => form.querySelector(`textarea[name=${name}]`).value;

  // The labeler's turns before the assistant field `name`: assistant_1, then user_2, assistant_2, ...
  function turnsBefore(name) {
    const n = parseInt(name.split("_")[1], 10);
    const turns = [];
    for (let k = 1; k <= n; k += 1) {
      if (k > 1) turns.push({ role: "user", content: value(`user_${k}`) });
      if (k < n) turns.push({ role: "assistant", content: value(`assistant_${k}`) });
    }
    return turns;
  }

  section.querySelectorAll(".turn-suggestion").forEach((box) => {
    const name = box.dataset.for;
    const ask = box.querySelector("[data-suggest]");
    const shown = box.querySelector(".suggestion-box");
    const text = box.querySelector(".turn-text");
    const status = box.querySelector(".suggestion-status");
    const use = box.querySelector("[data-use-suggestion]");
    let suggestion = null;
    ask.addEventListener("click", async () => {
      ask.disabled = true;
      shown.hidden = false;
      use.hidden = true;
      text.textContent = "";
      status.textContent = "Asking the model…";
      try {
        suggestion = await window.replies.call("POST", section.dataset.suggestUrl, { turns: turnsBefore(name) }, csrf);
      } catch (error) {
        status.textContent = error.message;
        ask.disabled = false;
        return;
      }
      window.replies.follow(suggestion.stream, "", {
        onText: (so_far) => { text.textContent = so_far; },
        onNote: (words) => { status.textContent = words; },
        onEnd: (stored) => {
          Object.assign(suggestion, stored);
          text.textContent = stored.text;
          status.textContent = stored.state === "done" ? `Suggested by ${stored.model_version}.` : stored.error;
          use.hidden = stored.state !== "done";
          ask.disabled = false;
          ask.textContent = "Suggest another";
        },
        onLost: () => { status.textContent = "The connection was lost; ask again."; ask.disabled = false; },
      });
    });
    const field = form.querySelector(`textarea[name=${name}]`);
    field.addEventListener("input", () => {
      if (!field.value.trim() && usedBy[name]) {
        delete usedBy[name];
        recordUsed();
      }
    });
    use.addEventListener("click", () => {
      if (field.value.trim() && !window.confirm("Replace what you have written with the suggestion?")) return;
      field.value = suggestion.text;
      usedBy[name] = String(suggestion.id);
      recordUsed();
      field.focus();
    });
  });
})();
