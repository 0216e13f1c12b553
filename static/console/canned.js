// Canned replies (快捷回复): prepared answers the agent puts into the reply
// box, from the 快捷回复 button or by typing "/" at the start of the box
// ("/退款" lists the replies whose title or text holds 退款).
// Up/Down choose, Enter or a click fills the reply box (never sends), Esc
// closes. Every text is inserted with textContent.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function matches(item, query) {
  const q = query.trim().toLowerCase();
  if (!q) return true;
  return item.title.toLowerCase().includes(q) || item.text.toLowerCase().includes(q);
}

export function setupCanned({ input, onInsert }) {
  const panel = document.querySelector("#canned");
  const filter = document.querySelector("#canned-filter");
  const list = document.querySelector("#canned-list");
  const empty = document.querySelector("#canned-empty");
  const toggle = document.querySelector("#canned-open");
  const state = {
    items: [], // every canned reply, sorted by title (the server's order)
    shown: [], // the ones matching the filter
    mode: null, // null (closed), "slash" (typed "/" in the box) or "button"
    active: 0, // index in shown
    dismissed: false, // Esc in "/" mode: stay closed until the "/" is gone
    asked: 0,
  };

  async function load() {
    state.asked += 1;
    const ticket = state.asked;
    try {
      const res = await fetch("/api/console/canned", { credentials: "same-origin" });
      if (!res.ok) return;
      const data = await res.json();
      if (ticket !== state.asked) return; // a newer load won
      state.items = Array.isArray(data.replies) ? data.replies : [];
      if (state.mode) render();
    } catch (err) {
      // Canned replies are a help: a failure keeps the list already loaded.
    }
  }

  function query() {
    return state.mode === "slash" ? input.value.slice(1) : filter.value;
  }

  function render() {
    state.shown = state.items.filter((item) => matches(item, query()));
    state.active = Math.max(0, Math.min(state.active, state.shown.length - 1));
    list.replaceChildren(
      ...state.shown.map((item, index) => {
        const li = el("li", "canned-item");
        li.dataset.id = item.reply_id;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", String(index === state.active));
        li.append(el("strong", "canned-title", item.title), el("p", "canned-text", item.text));
        // Keep the focus where the agent is typing.
        li.addEventListener("mousedown", (event) => event.preventDefault());
        li.addEventListener("click", () => pick(item));
        return li;
      }),
    );
    empty.textContent = state.items.length ? "没有匹配的快捷回复" : "还没有快捷回复";
    empty.hidden = state.shown.length > 0;
    list.children[state.active]?.scrollIntoView({ block: "nearest" });
  }

  function open(mode) {
    state.mode = mode;
    state.active = 0;
    panel.hidden = false;
    filter.hidden = mode === "slash";
    toggle.setAttribute("aria-expanded", "true");
    if (mode === "button") {
      filter.value = "";
      filter.focus();
    }
    render();
    load();
  }

  function close() {
    state.mode = null;
    panel.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
  }

  function pick(item) {
    const slash = state.mode === "slash";
    close();
    if (slash) {
      input.value = item.text;
      input.setSelectionRange(input.value.length, input.value.length);
    } else {
      // Where the caret was in the reply box, in place of any selection.
      input.setRangeText(item.text, input.selectionStart, input.selectionEnd, "end");
    }
    input.focus();
    onInsert();
  }

  function move(step) {
    if (!state.shown.length) return;
    state.active = (state.active + step + state.shown.length) % state.shown.length;
    render();
  }

  // Keys for the open list; true when the key was used here.
  function listKey(event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      move(event.key === "ArrowDown" ? 1 : -1);
      return true;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      if (!state.shown.length) {
        // Nothing matches "/…": the box is sent as it is.
        if (state.mode === "slash") close();
        return false;
      }
      event.preventDefault();
      pick(state.shown[state.active]);
      return true;
    }
    if (event.key === "Escape") {
      event.preventDefault();
      if (state.mode === "slash") state.dismissed = true;
      close();
      input.focus();
      return true;
    }
    return false;
  }

  // The reply box's keydown, asked first: true when the key was used here
  // (an Enter that picks a reply must not also send the box).
  function handleKey(event) {
    if (state.mode === "slash") return listKey(event);
    if (state.mode === "button" && event.key === "Escape") {
      event.preventDefault();
      close();
      return true;
    }
    return false;
  }

  input.addEventListener("input", () => {
    const value = input.value;
    if (value.startsWith("/") && !value.includes("\n")) {
      if (state.dismissed || state.mode === "button") return;
      if (state.mode === "slash") {
        state.active = 0;
        render();
      } else {
        open("slash");
      }
      return;
    }
    state.dismissed = false;
    if (state.mode === "slash") close();
  });

  filter.addEventListener("input", () => {
    state.active = 0;
    render();
  });
  filter.addEventListener("keydown", (event) => {
    if (state.mode === "button") listKey(event);
  });
  toggle.addEventListener("click", () => {
    if (state.mode) {
      close();
      input.focus();
    } else {
      open("button");
    }
  });
  document.addEventListener("mousedown", (event) => {
    if (!state.mode) return;
    const target = event.target;
    if (panel.contains(target) || toggle.contains(target) || target === input) return;
    close();
  });

  load();
  return { handleKey, close };
}
