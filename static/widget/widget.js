/*
 * goflypy chat widget: one self-contained classic script.
 *
 *   <script src="https://chat.shop.example/static/widget/widget.js"
 *           data-channel="web" async></script>
 *
 * Attributes: data-channel (web, app, miniapp, h5), data-mode ("float" or
 * "page"), data-title (header text). The server address is taken from the
 * script's own src, so the tag works on any page the server allows.
 *
 * A signed-in shopper: data-shopper-id, data-shopper-ts and data-shopper-sig
 * carry the identity the shop's backend signed (docs/protocol.md, "Verified
 * identity"); /chat takes shopper_id, ts and sig from its query instead.
 * Pages may also call goflypy.identify({shopper_id, ts, sig}) after sign-in
 * and goflypy.signOut() after sign-out.
 *
 * Everything lives in an open shadow root so the host page's CSS cannot reach
 * it, and every piece of chat text is inserted with textContent.
 */
(function () {
  "use strict";

  // NOTE: document.currentScript is only set while this file first runs;
  // capture it before anything asynchronous happens.
  const SCRIPT = document.currentScript || findOwnScript();
  if (!SCRIPT || window.__goflypyWidget) {
    return;
  }
  window.__goflypyWidget = true;

  const TOKEN_KEY = "goflypy.visitor_token";
  const CHANNELS = ["web", "app", "miniapp", "h5"];
  const TYPING_EVERY_MS = 2000;
  const TYPING_SHOW_MS = 4000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;

  const TEXT = {
    title: "在线客服",
    robot: "智能客服为您服务",
    queued: "排队中，第{n}位",
    queuedNoPos: "排队中，请稍候",
    assigned: "客服 {name} 为您服务",
    closed: "会话已结束",
    connecting: "正在连接…",
    reconnecting: "网络已断开，正在重新连接…",
    unreachable: "暂时无法连接客服，正在重试…",
    placeholder: "请输入您的问题",
    send: "发送",
    human: "转人工",
    typing: "对方正在输入…",
    open: "咨询客服",
    close: "收起",
    rateAsk: "请为本次服务评分",
    rateThanks: "感谢您的评价！",
    sending: "发送中",
    failed: "发送失败",
    you: "我",
    robotName: "智能客服",
    agentName: "客服",
    stars: ["非常不满意", "不满意", "一般", "满意", "非常满意"],
    errors: {
      too_long: "消息太长，请分几次发送",
      bad_text: "消息不能为空",
      rate_limited: "发送太频繁，请稍后再试",
      busy: "咨询人数较多，正在为您连接…",
      storage_full: "服务器暂时无法保存消息，请稍后再试",
    },
  };

  function findOwnScript() {
    const scripts = document.getElementsByTagName("script");
    for (let i = scripts.length - 1; i >= 0; i--) {
      if (/\/widget\/widget\.js(\?|#|$)/.test(scripts[i].src)) {
        return scripts[i];
      }
    }
    return null;
  }

  // ---- settings from the tag and the page --------------------------------

  const mode = SCRIPT.dataset.mode === "page" ? "page" : "float";
  const pageQuery = new URLSearchParams(window.location.search);
  const channel = pickChannel();
  const title = SCRIPT.dataset.title || TEXT.title;
  const serverUrl = new URL(SCRIPT.src, window.location.href);
  const socketUrl =
    (serverUrl.protocol === "https:" ? "wss://" : "ws://") +
    serverUrl.host +
    "/ws/visitor";

  function pickChannel() {
    const fromQuery = mode === "page" ? pageQuery.get("channel") : null;
    const wanted = fromQuery || SCRIPT.dataset.channel || (mode === "page" ? "h5" : "web");
    return CHANNELS.indexOf(wanted) >= 0 ? wanted : "web";
  }

  function loadToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY);
    } catch (err) {
      return null; // storage blocked (private mode, sandboxed frame)
    }
  }

  function saveToken(token) {
    try {
      window.localStorage.setItem(TOKEN_KEY, token);
    } catch (err) {
      // Without storage the visitor still chats; history just won't survive.
    }
  }

  // Device linking: /chat?token=… adopts the visitor from another device.
  // A link must not silently swap a shopper who already chats here into
  // someone else's conversation, so that case asks first. The token is the
  // visitor's only key: take it out of the address bar (and of the page
  // address agents see) as soon as it is handled.
  if (mode === "page" && pageQuery.get("token")) {
    const linked = pageQuery.get("token");
    const current = loadToken();
    if (
      !current ||
      current === linked ||
      window.confirm("要在本设备继续另一台设备上的会话吗？本设备当前的会话将不再显示。")
    ) {
      saveToken(linked);
    }
    pageQuery.delete("token");
    const rest = pageQuery.toString();
    const clean = window.location.pathname + (rest ? "?" + rest : "") + window.location.hash;
    try {
      window.history.replaceState(window.history.state, "", clean);
    } catch (err) {
      // Sandboxed webviews may refuse; the token then just stays visible.
    }
  }

  // Verified identity: from the tag, or from /chat's fragment or query (the
  // fragment never reaches a server log). Either is taken out of the address
  // bar like the token: agents see the page address.
  function readIdentity() {
    const data = SCRIPT.dataset;
    let raw = { shopper_id: data.shopperId, ts: data.shopperTs, sig: data.shopperSig };
    if (mode !== "page") return cleanIdentity(raw);
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const source = [pageQuery, fragment].filter((params) => params.get("sig")).pop();
    if (!source) return cleanIdentity(raw);
    raw = { shopper_id: source.get("shopper_id"), ts: source.get("ts"), sig: source.get("sig") };
    ["shopper_id", "ts", "sig"].forEach((name) => source.delete(name));
    const rest = pageQuery.toString();
    const hash = source === fragment ? fragment.toString() : window.location.hash.slice(1);
    try {
      window.history.replaceState(
        window.history.state,
        "",
        window.location.pathname + (rest ? "?" + rest : "") + (hash ? "#" + hash : ""),
      );
    } catch (err) {
      // Sandboxed webviews may refuse; pageAddress() still drops the fields.
    }
    return cleanIdentity(raw);
  }

  function cleanIdentity(raw) {
    if (!raw || !raw.shopper_id || !raw.sig) return null;
    return { shopper_id: String(raw.shopper_id), ts: Number(raw.ts), sig: String(raw.sig) };
  }

  function pageAddress() {
    const rest = new URLSearchParams(window.location.search);
    ["token", "shopper_id", "ts", "sig"].forEach((name) => rest.delete(name));
    const query = rest.toString();
    return (window.location.origin + window.location.pathname + (query ? "?" + query : "")).slice(0, 1000);
  }

  // ---- chat state --------------------------------------------------------

  const state = {
    token: loadToken(),
    identity: readIdentity(),
    conversationId: null,
    highestSeq: 0,
    seen: new Set(), // "conversation:seq" already on screen
    pending: new Map(), // client_id -> {text, el}
    socket: null,
    connected: false,
    everConnected: false,
    attempt: 0,
    retryTimer: null,
    retryNotBefore: 0,
    welcomed: false,
    heartbeatTimer: null,
    heartbeatMs: 25000,
    lastFrameAt: 0,
    lastTypingSent: 0,
    typingTimer: null,
    typingSendTimer: null,
    status: null,
    rated: false,
    open: mode === "page",
    unseen: 0,
    clientCounter: 0,
    helloSeq: 0,
    replayUpTo: 0,
    readTimer: null,
  };

  // ---- DOM ---------------------------------------------------------------

  const CSS = `
:host { all: initial; }
* { box-sizing: border-box; }
.root {
  font: 14px/1.5 -apple-system, "PingFang SC", "Hiragino Sans GB",
    "Microsoft YaHei", "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif;
  color: #1f2329;
}
[hidden] { display: none !important; }
button { font: inherit; cursor: pointer; }
#goflypy-launcher {
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
  display: flex; align-items: center; gap: 6px;
  padding: 12px 18px; border: 0; border-radius: 28px;
  background: #16a34a; color: #fff; box-shadow: 0 6px 20px rgba(0,0,0,.2);
}
#goflypy-launcher:hover { background: #15803d; }
#goflypy-launcher:focus-visible { outline: 3px solid #86efac; outline-offset: 2px; }
.badge {
  min-width: 20px; padding: 0 6px; border-radius: 10px;
  background: #ef4444; color: #fff; font-size: 12px; line-height: 20px;
  text-align: center;
}
#goflypy-panel {
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483001;
  width: 370px; height: min(600px, calc(100vh - 40px));
  display: flex; flex-direction: column; overflow: hidden;
  background: #fff; border-radius: 12px; box-shadow: 0 10px 40px rgba(0,0,0,.25);
}
.page #goflypy-panel {
  inset: 0; width: 100%; height: 100%; border-radius: 0; box-shadow: none;
}
@media (max-width: 480px) {
  #goflypy-panel { inset: 0; width: 100%; height: 100%; border-radius: 0; }
  #goflypy-input { font-size: 16px; } /* below 16px, iOS zooms on focus */
}
.head {
  display: flex; align-items: center; gap: 10px;
  padding: 12px 14px; background: #16a34a; color: #fff;
}
.head .who { flex: 1; min-width: 0; }
.head .name { font-weight: 600; font-size: 16px; }
#goflypy-status { font-size: 12px; opacity: .9; }
.head button {
  border: 1px solid rgba(255,255,255,.6); background: transparent; color: #fff;
  border-radius: 14px; padding: 2px 10px; font-size: 12px;
}
.head button:disabled { opacity: .5; cursor: default; }
.conn {
  padding: 4px 12px; background: #fef3c7; color: #92400e; font-size: 12px;
  text-align: center;
}
.list {
  flex: 1; overflow-y: auto; padding: 12px; background: #f5f6f7;
  display: flex; flex-direction: column; gap: 8px;
}
.goflypy-msg { display: flex; flex-direction: column; max-width: 80%; }
.goflypy-msg .who { font-size: 12px; color: #8a8f99; margin: 0 4px 2px; }
.goflypy-msg .bubble {
  padding: 8px 12px; border-radius: 12px; white-space: pre-wrap;
  word-break: break-word; overflow-wrap: anywhere;
}
.goflypy-msg[data-sender="visitor"] { align-self: flex-end; align-items: flex-end; }
.goflypy-msg[data-sender="visitor"] .bubble { background: #16a34a; color: #fff; border-bottom-right-radius: 4px; }
.goflypy-msg[data-sender="robot"], .goflypy-msg[data-sender="agent"] { align-self: flex-start; }
.goflypy-msg[data-sender="robot"] .bubble, .goflypy-msg[data-sender="agent"] .bubble {
  background: #fff; border: 1px solid #e5e7eb; border-bottom-left-radius: 4px;
}
.goflypy-msg[data-sender="system"] { align-self: center; max-width: 90%; }
.goflypy-msg[data-sender="system"] .bubble {
  padding: 2px 10px; background: transparent; color: #8a8f99; font-size: 12px;
  text-align: center;
}
.goflypy-msg.pending .bubble { opacity: .6; }
.goflypy-msg.failed .bubble { background: #fecaca; color: #7f1d1d; }
.goflypy-msg .note { font-size: 11px; color: #b91c1c; margin: 2px 4px 0; }
.suggestions { display: flex; flex-direction: column; gap: 4px; margin-top: 6px; }
.goflypy-suggestion {
  text-align: left; padding: 6px 10px; border: 1px solid #bbf7d0;
  border-radius: 8px; background: #f0fdf4; color: #166534;
}
.goflypy-suggestion:hover { background: #dcfce7; }
#goflypy-typing { padding: 0 14px 4px; font-size: 12px; color: #8a8f99; background: #f5f6f7; }
.rating {
  padding: 10px 12px; border-top: 1px solid #e5e7eb; text-align: center;
  background: #fff;
}
.rating .stars { display: inline-flex; gap: 4px; margin-top: 4px; }
.goflypy-star {
  border: 0; background: transparent; font-size: 26px; line-height: 1;
  color: #d1d5db; padding: 2px;
}
.goflypy-star.on { color: #f59e0b; }
.compose {
  display: flex; gap: 8px; align-items: flex-end; padding: 10px;
  border-top: 1px solid #e5e7eb; background: #fff;
}
#goflypy-input {
  flex: 1; resize: none; min-height: 38px; max-height: 120px;
  padding: 8px 10px; border: 1px solid #d1d5db; border-radius: 8px;
  font: inherit; color: inherit; background: #fff;
}
#goflypy-input:focus { outline: 2px solid #86efac; border-color: #16a34a; }
#goflypy-send {
  padding: 8px 16px; border: 0; border-radius: 8px; background: #16a34a; color: #fff;
}
#goflypy-send:disabled { background: #9ca3af; cursor: default; }
`;

  // A constructed sheet is not subject to the host page's style-src policy;
  // older browsers get a plain <style> element instead.
  function adoptStyles(target) {
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      target.adoptedStyleSheets = [sheet];
    } catch (err) {
      const style = document.createElement("style");
      style.textContent = CSS;
      target.appendChild(style);
    }
  }

  function h(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const key in attrs || {}) {
      if (key === "text") {
        el.textContent = attrs[key];
      } else if (key === "class") {
        el.className = attrs[key];
      } else {
        el.setAttribute(key, attrs[key]);
      }
    }
    for (const child of children || []) {
      el.appendChild(child);
    }
    return el;
  }

  function chatIcon() {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z");
    svg.appendChild(path);
    return svg;
  }

  const host = document.createElement("div");
  host.id = "goflypy-widget";
  const shadow = host.attachShadow({ mode: "open" });
  adoptStyles(shadow);

  const launcherBadge = h("span", { class: "badge", hidden: "" });
  const launcher = h(
    "button",
    { id: "goflypy-launcher", type: "button", "aria-label": TEXT.open },
    [chatIcon(), h("span", { text: TEXT.open }), launcherBadge],
  );
  const statusEl = h("div", { id: "goflypy-status", text: TEXT.connecting });
  const humanBtn = h("button", { id: "goflypy-human", type: "button", text: TEXT.human });
  const closeBtn = h("button", { type: "button", text: TEXT.close, "aria-label": TEXT.close });
  const connEl = h("div", { class: "conn", role: "status", hidden: "" });
  const listEl = h("div", { class: "list", id: "goflypy-messages", role: "log", "aria-live": "polite" });
  const typingEl = h("div", { id: "goflypy-typing", text: TEXT.typing, hidden: "" });
  const ratingEl = h("div", { class: "rating", id: "goflypy-rating", hidden: "" });
  const inputEl = h("textarea", {
    id: "goflypy-input",
    rows: "1",
    maxlength: "2000",
    placeholder: TEXT.placeholder,
    "aria-label": TEXT.placeholder,
  });
  const sendBtn = h("button", { id: "goflypy-send", type: "button", text: TEXT.send });
  const panel = h("div", { id: "goflypy-panel", role: "dialog", "aria-label": title }, [
    h("div", { class: "head" }, [
      h("div", { class: "who" }, [h("div", { class: "name", text: title }), statusEl]),
      humanBtn,
      closeBtn,
    ]),
    connEl,
    listEl,
    typingEl,
    ratingEl,
    h("div", { class: "compose" }, [inputEl, sendBtn]),
  ]);
  const root = h("div", { class: "root" + (mode === "page" ? " page" : "") }, [launcher, panel]);
  shadow.appendChild(root);
  buildRating();

  if (mode === "page") {
    launcher.hidden = true;
    closeBtn.hidden = true;
  } else {
    panel.hidden = true;
  }

  // ---- rendering ---------------------------------------------------------

  function senderLabel(msg) {
    if (msg.sender === "visitor") return TEXT.you;
    if (msg.sender === "robot") return TEXT.robotName;
    if (msg.sender === "agent") return msg.agent_name || TEXT.agentName;
    return "";
  }

  function buildMessage(msg) {
    const el = h("div", { class: "goflypy-msg", "data-sender": msg.sender });
    if (typeof msg.kind === "string") el.dataset.kind = msg.kind;
    const label = senderLabel(msg);
    if (label && msg.sender !== "visitor") {
      el.appendChild(h("div", { class: "who", text: label }));
    }
    el.appendChild(h("div", { class: "bubble", text: msg.text }));
    if (msg.sender === "robot" && Array.isArray(msg.suggestions) && msg.suggestions.length) {
      const box = h("div", { class: "suggestions" });
      for (const item of msg.suggestions) {
        if (!item || typeof item.question !== "string") continue;
        const btn = h("button", { class: "goflypy-suggestion", type: "button", text: item.question });
        btn.addEventListener("click", () => sendText(item.question));
        box.appendChild(btn);
      }
      el.appendChild(box);
    }
    return el;
  }

  function placeBySeq(el, seq) {
    // Messages arrive in order, but a reconnect can interleave with pending
    // bubbles: keep stored messages sorted and pending ones at the bottom.
    const children = listEl.children;
    for (let i = 0; i < children.length; i++) {
      const other = children[i];
      const otherSeq = Number(other.dataset.seq || 0);
      const sameConv = other.dataset.conv === el.dataset.conv;
      if (other.classList.contains("pending") || (sameConv && otherSeq > seq)) {
        listEl.insertBefore(el, other);
        return;
      }
    }
    listEl.appendChild(el);
  }

  function isNearBottom() {
    return listEl.scrollHeight - listEl.scrollTop - listEl.clientHeight < 80;
  }

  function scrollToEnd(force) {
    if (force || isNearBottom()) {
      listEl.scrollTop = listEl.scrollHeight;
    }
  }

  function showMessage(msg) {
    if (typeof msg.seq !== "number" || typeof msg.text !== "string") return;
    const conv = msg.conversation_id || state.conversationId || "";
    if (conv !== state.conversationId && state.conversationId) {
      // A closed conversation reopened as a new one: its seqs start again.
      state.conversationId = conv;
      state.highestSeq = 0;
    }
    const key = conv + ":" + msg.seq;
    if (state.seen.has(key)) return;
    state.seen.add(key);
    state.highestSeq = Math.max(state.highestSeq, msg.seq);

    const stick = isNearBottom();
    if (msg.client_id && state.pending.has(msg.client_id)) {
      state.pending.get(msg.client_id).el.remove();
      state.pending.delete(msg.client_id);
    }
    const el = buildMessage(msg);
    el.dataset.seq = String(msg.seq);
    el.dataset.conv = conv;
    placeBySeq(el, msg.seq);
    scrollToEnd(stick || msg.sender === "visitor");

    if (msg.sender === "agent" || msg.sender === "robot") {
      hideTyping();
    }
    if (msg.sender !== "visitor") {
      noteIncoming(msg.seq);
    }
  }

  function noteIncoming(seq) {
    if (state.open && document.visibilityState !== "hidden") {
      scheduleRead();
    } else if (seq > state.replayUpTo) {
      // Only live messages count: a replayed history is not news.
      state.unseen += 1;
      launcherBadge.textContent = String(state.unseen);
      launcherBadge.hidden = false;
    }
  }

  // One read frame for a burst of messages (a replay can hold hundreds).
  function scheduleRead() {
    if (state.readTimer) return;
    state.readTimer = setTimeout(() => {
      state.readTimer = null;
      if (state.highestSeq) sendFrame({ type: "read", seq: state.highestSeq });
    }, 300);
  }

  function showNotice(text) {
    const el = h("div", { class: "goflypy-msg local", "data-sender": "system" }, [
      h("div", { class: "bubble", text: text }),
    ]);
    listEl.appendChild(el);
    scrollToEnd(true);
  }

  function showStatus(frame) {
    state.status = frame.state;
    let text = TEXT.robot;
    if (frame.state === "queued") {
      text = frame.position ? TEXT.queued.replace("{n}", frame.position) : TEXT.queuedNoPos;
    } else if (frame.state === "assigned") {
      text = TEXT.assigned.replace("{name}", frame.agent_name || TEXT.agentName);
    } else if (frame.state === "closed") {
      text = TEXT.closed;
    }
    statusEl.textContent = text;
    statusEl.dataset.state = frame.state;
    humanBtn.disabled = frame.state === "queued" || frame.state === "assigned";

    if (frame.state === "closed") {
      hideTyping();
      if (!state.rated) ratingEl.hidden = false;
    } else {
      ratingEl.hidden = true;
      state.rated = false;
      resetStars();
    }
  }

  function buildRating() {
    const stars = h("div", { class: "stars", role: "group", "aria-label": TEXT.rateAsk });
    for (let score = 1; score <= 5; score++) {
      const star = h("button", {
        class: "goflypy-star",
        type: "button",
        "data-score": String(score),
        title: TEXT.stars[score - 1],
        "aria-label": TEXT.stars[score - 1],
        text: "★",
      });
      star.addEventListener("click", () => rate(score));
      stars.appendChild(star);
    }
    ratingEl.appendChild(h("div", { class: "ask", text: TEXT.rateAsk }));
    ratingEl.appendChild(stars);
  }

  function resetStars() {
    ratingEl.querySelector(".ask").textContent = TEXT.rateAsk;
    for (const star of ratingEl.querySelectorAll(".goflypy-star")) {
      star.classList.remove("on");
      star.disabled = false;
    }
  }

  function rate(score) {
    if (!sendFrame({ type: "rate", score: score })) return;
    state.rated = true;
    for (const star of ratingEl.querySelectorAll(".goflypy-star")) {
      star.classList.toggle("on", Number(star.dataset.score) <= score);
      star.disabled = true;
    }
    ratingEl.querySelector(".ask").textContent = TEXT.rateThanks;
  }

  function showTyping() {
    typingEl.hidden = false;
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(hideTyping, TYPING_SHOW_MS);
  }

  function hideTyping() {
    clearTimeout(state.typingTimer);
    typingEl.hidden = true;
  }

  function showConnection(text) {
    connEl.textContent = text || "";
    connEl.hidden = !text;
  }

  // ---- sending -----------------------------------------------------------

  function newClientId() {
    state.clientCounter += 1;
    const rand = Math.random().toString(36).slice(2, 8);
    return "w-" + Date.now().toString(36) + "-" + rand + "-" + state.clientCounter;
  }

  function sendFrame(frame) {
    if (!state.socket || !state.connected) return false;
    try {
      state.socket.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      return false;
    }
  }

  function sendText(text) {
    text = text.replace(/^\s+|\s+$/g, "");
    if (!text) return;
    const clientId = newClientId();
    const el = h("div", { class: "goflypy-msg pending", "data-sender": "visitor", "data-client-id": clientId }, [
      h("div", { class: "bubble", text: text }),
    ]);
    listEl.appendChild(el);
    scrollToEnd(true);
    state.pending.set(clientId, { text: text, el: el });
    sendFrame({ type: "message", client_id: clientId, text: text });
    ensureConnected();
  }

  function resendPending() {
    for (const [clientId, item] of state.pending) {
      if (item.failed) continue;
      sendFrame({ type: "message", client_id: clientId, text: item.text });
    }
  }

  function onAck(frame) {
    const item = state.pending.get(frame.client_id);
    if (!item) return;
    // The echoed message frame replaces the bubble; until then mark it stored.
    item.el.classList.remove("pending");
    item.acked = true;
  }

  function onError(frame) {
    const text = TEXT.errors[frame.code];
    if (frame.code === "bad_identity") {
      // The socket goes on anonymous; do not repeat the identity on reconnects.
      state.identity = null;
      return;
    }
    if (!state.welcomed && (frame.code === "busy" || frame.code === "rate_limited")) {
      // The server refused this socket or this new visitor: reconnect no
      // sooner than it asks, so a full server is not stormed.
      state.retryNotBefore = Date.now() + (Number(frame.retry_after_ms) || 5000);
      if (text) showConnection(text);
      if (state.socket) state.socket.close();
      return;
    }
    const failedId = frame.client_id;
    if (frame.code === "rate_limited") {
      const wait = Math.max(1000, Number(frame.retry_after_ms) || 5000);
      setTimeout(resendPending, wait);
    } else if (failedId && state.pending.has(failedId)) {
      markFailed(state.pending.get(failedId));
    } else if (frame.code === "too_long" || frame.code === "bad_text") {
      // The error names no client_id: the newest unacked message caused it.
      const last = Array.from(state.pending.values()).filter((i) => !i.acked).pop();
      if (last) markFailed(last);
    }
    if (text) showNotice(text);
  }

  function markFailed(item) {
    item.failed = true;
    item.el.classList.remove("pending");
    item.el.classList.add("failed");
    item.el.appendChild(h("div", { class: "note", text: TEXT.failed }));
  }

  // ---- connection --------------------------------------------------------

  function ensureConnected() {
    if (state.socket || state.retryTimer) return;
    connect();
  }

  function connect() {
    state.retryTimer = null;
    let socket;
    try {
      socket = new WebSocket(socketUrl);
    } catch (err) {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    if (!state.everConnected) showConnection("");
    socket.addEventListener("open", () => onOpen(socket));
    socket.addEventListener("message", (event) => onFrame(socket, event));
    socket.addEventListener("close", () => onClose(socket));
  }

  function onOpen(socket) {
    if (socket !== state.socket) return;
    state.connected = true;
    state.welcomed = false;
    state.lastFrameAt = Date.now();
    // NOTE: a fresh page asks for the whole history (last_seq 0); a reconnect
    // on the same page asks only for what it has not shown.
    state.helloSeq = state.highestSeq;
    sendFrame({
      type: "hello",
      visitor_token: state.token || null,
      channel: channel,
      last_seq: state.highestSeq,
      page: pageAddress(),
      identity: state.identity,
    });
  }

  function onFrame(socket, event) {
    if (socket !== state.socket) return;
    state.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    if (!frame || typeof frame !== "object") return;

    switch (frame.type) {
      case "welcome":
        onWelcome(frame);
        break;
      case "message":
        showMessage(frame);
        break;
      case "ack":
        onAck(frame);
        break;
      case "status":
        showStatus(frame);
        break;
      case "typing":
        if (frame.sender === "agent") showTyping();
        break;
      case "error":
        onError(frame);
        break;
      default:
        break; // pong and frames from newer servers
    }
  }

  function onWelcome(frame) {
    state.welcomed = true;
    state.attempt = 0;
    state.everConnected = true;
    showConnection("");
    if (frame.visitor_token) {
      state.token = frame.visitor_token;
      saveToken(frame.visitor_token);
    }
    const changed = state.conversationId && frame.conversation_id !== state.conversationId;
    state.conversationId = frame.conversation_id || state.conversationId;
    if (changed) {
      state.highestSeq = 0;
      if (state.helloSeq > 0) {
        // We asked for "after seq N" of a conversation that is no longer the
        // current one; ask again from the start of the new one.
        state.socket.close();
        return;
      }
    }
    state.replayUpTo = Number(frame.last_seq) || 0;
    state.heartbeatMs = Math.max(5, Number(frame.heartbeat_s) || 25) * 1000;
    startHeartbeat();
    resendPending();
  }

  function onClose(socket) {
    if (socket !== state.socket) return;
    state.socket = null;
    state.connected = false;
    stopHeartbeat();
    hideTyping();
    showConnection(state.everConnected ? TEXT.reconnecting : TEXT.unreachable);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(state.retryTimer);
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, state.attempt));
    const backoff = ceiling / 2 + Math.random() * (ceiling / 2);
    const delay = Math.max(backoff, state.retryNotBefore - Date.now());
    state.attempt = Math.min(state.attempt + 1, 10);
    state.retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (state.socket) return;
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    connect();
  }

  function startHeartbeat() {
    stopHeartbeat();
    state.heartbeatTimer = setInterval(() => {
      if (Date.now() - state.lastFrameAt > state.heartbeatMs * 2.5 && state.socket) {
        state.socket.close(); // silent for too long: assume the path is dead
        return;
      }
      sendFrame({ type: "ping" });
    }, state.heartbeatMs);
  }

  function stopHeartbeat() {
    clearInterval(state.heartbeatTimer);
    state.heartbeatTimer = null;
  }

  // ---- user actions ------------------------------------------------------

  function openPanel() {
    state.open = true;
    panel.hidden = false;
    launcher.hidden = true;
    state.unseen = 0;
    launcherBadge.hidden = true;
    ensureConnected();
    scrollToEnd(true);
    scheduleRead();
    inputEl.focus();
  }

  function closePanel() {
    state.open = false;
    panel.hidden = true;
    launcher.hidden = false;
    launcher.focus();
  }

  // At most one typing frame per TYPING_EVERY_MS; keystrokes inside the
  // window are reported once it ends, so a short burst is never lost.
  function signalTyping() {
    if (state.typingSendTimer) return;
    const wait = state.lastTypingSent + TYPING_EVERY_MS - Date.now();
    if (wait > 0) {
      state.typingSendTimer = setTimeout(() => {
        state.typingSendTimer = null;
        signalTyping();
      }, wait);
      return;
    }
    if (inputEl.value && sendFrame({ type: "typing" })) {
      state.lastTypingSent = Date.now();
    }
  }

  function submit() {
    const text = inputEl.value;
    if (!text.trim()) return;
    inputEl.value = "";
    clearTimeout(state.typingSendTimer);
    state.typingSendTimer = null;
    state.lastTypingSent = 0;
    sendText(text);
    inputEl.focus();
  }

  launcher.addEventListener("click", openPanel);
  closeBtn.addEventListener("click", closePanel);
  sendBtn.addEventListener("click", submit);
  humanBtn.addEventListener("click", () => {
    ensureConnected();
    sendFrame({ type: "handoff" });
  });
  inputEl.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  inputEl.addEventListener("input", signalTyping);
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      reconnectNow();
      if (state.open) scheduleRead();
    }
  });

  // ---- start -------------------------------------------------------------

  function mount() {
    document.body.appendChild(host);
    // A shopper with history reconnects at once so agent replies reach them;
    // a first-time visitor costs the server nothing until they open the chat.
    if (mode === "page" || state.token) {
      showConnection("");
      connect();
    }
    if (mode === "page") inputEl.focus();
  }

  // A new hello on a fresh socket is how the server learns a new identity.
  function restartSocket() {
    const old = state.socket;
    state.socket = null;
    state.connected = false;
    if (old) old.close();
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    if (state.open || state.token) connect();
  }

  function identify(identity) {
    state.identity = cleanIdentity(identity);
    restartSocket();
  }

  // After sign-out the shopper's conversation must not stay on this device.
  function signOut() {
    state.identity = null;
    state.token = null;
    try {
      window.localStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      // Storage blocked: the token lived in memory only.
    }
    state.conversationId = null;
    state.highestSeq = 0;
    state.seen.clear();
    state.pending.clear();
    listEl.replaceChildren();
    restartSocket();
  }

  window.goflypy = { open: openPanel, close: closePanel, identify: identify, signOut: signOut };

  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount);
  }
})();
