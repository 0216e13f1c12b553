// FAQ answers for the shopper's last message, beside the reply box.
// One click fills the reply box; another button sends the answer at once.

const WAIT_MS = 300;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function setupSuggestions({ fill, send }) {
  const box = document.querySelector("#kb-suggest");
  const list = document.querySelector("#kb-suggest-list");
  let current = null; // conversation shown
  let timer = null;
  let asked = 0;

  function clear() {
    current = null;
    clearTimeout(timer);
    list.replaceChildren();
    box.hidden = true;
  }

  function render(items) {
    list.replaceChildren(
      ...items.map((item) => {
        const li = el("li", "kb-suggest-item");
        li.dataset.id = item.faq_id;
        const head = el("div", "kb-suggest-head");
        head.append(
          el("strong", "kb-suggest-question", item.question),
          el("span", "kb-suggest-score", Number(item.score).toFixed(2)),
        );
        const answer = el("p", "kb-suggest-answer", item.answer);
        const fillBtn = el("button", "plain kb-suggest-fill", "填入");
        fillBtn.type = "button";
        fillBtn.addEventListener("click", () => fill(item.answer));
        const sendBtn = el("button", "primary kb-suggest-send", "发送");
        sendBtn.type = "button";
        sendBtn.addEventListener("click", () => send(item.answer));
        const actions = el("div", "kb-suggest-actions");
        actions.append(fillBtn, sendBtn);
        li.append(head, answer, actions);
        return li;
      }),
    );
    box.hidden = items.length === 0;
  }

  async function load(convId) {
    asked += 1;
    const ticket = asked;
    try {
      const params = new URLSearchParams({ conversation_id: convId });
      const res = await fetch(`/api/console/suggestions?${params}`, { credentials: "same-origin" });
      if (!res.ok) return;
      const data = await res.json();
      if (ticket !== asked || convId !== current) return; // a newer question won
      render(Array.isArray(data.suggestions) ? data.suggestions : []);
    } catch (err) {
      // Suggestions are a help, not a duty: a failure leaves the panel as it was.
    }
  }

  // Called when a conversation opens or its shopper writes again.
  function refresh(convId) {
    if (convId !== current) {
      current = convId;
      list.replaceChildren();
      box.hidden = true;
    }
    clearTimeout(timer);
    timer = setTimeout(() => load(convId), WAIT_MS);
  }

  return { refresh, clear };
}
