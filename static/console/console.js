// The agent console: one page, one socket (/ws/agent, see docs/protocol.md).
// Every piece of visitor or agent text is inserted with textContent.
// Internal notes (备注) travel only on this socket: the visitor never gets them.

import {
  beep,
  desktopNotify,
  notificationPermission,
  askNotificationPermission,
  setBaseTitle,
  setUnreadTotal,
  toast,
  unlockOnFirstGesture,
} from "./alerts.js";
import { channelLabel, formatTime, stateLabel } from "./labels.js";
import { setupCanned } from "./canned.js";
import { setupSuggestions } from "./suggest.js";

const TYPING_EVERY_MS = 2000;
const TYPING_SHOW_MS = 4000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const PING_MS = 25000;

const $ = (sel) => document.querySelector(sel);
const app = $("#app");

const me = {
  username: app.dataset.username,
  display_name: app.dataset.displayName,
  role: app.dataset.role,
};

const state = {
  convs: new Map(), // id -> ConversationSummary of open conversations
  tab: "queue",
  openId: null,
  openSummary: null,
  seen: new Set(), // seqs shown in the open conversation
  seenNotes: new Set(), // note ids shown in the open conversation
  pending: new Map(), // client_id -> {convId, text, el, kind: "message" | "note"}
  online: [], // usernames of the agents online
  agentNames: {}, // username -> display name, for the agents online
  noteMode: false, // the reply box writes an internal note
  socket: null,
  connected: false,
  attempt: 0,
  retryTimer: null,
  pingTimer: null,
  lastTypingSent: 0,
  typingSendTimer: null,
  typingTimer: null,
  clientCounter: 0,
  past: [], // closed and archived conversations, newest first ("past" frames)
  pastMore: false,
};

const els = {
  conn: $("#conn-state"),
  list: $("#conv-list"),
  empty: $("#conv-empty"),
  paneEmpty: $("#pane-empty"),
  view: $("#conv-view"),
  name: $("#conv-name"),
  stateTag: $("#conv-state"),
  claim: $("#claim"),
  transfer: $("#transfer"),
  transferMenu: $("#transfer-menu"),
  transferList: $("#transfer-list"),
  transferEmpty: $("#transfer-empty"),
  close: $("#close-conv"),
  messages: $("#messages"),
  typing: $("#typing"),
  form: $("#reply-form"),
  input: $("#reply-input"),
  send: $("#reply-send"),
  noteToggle: $("#note-toggle"),
  cannedOpen: $("#canned-open"),
  info: $("#visitor-info"),
  toasts: $("#toasts"),
  notifyBtn: $("#enable-notify"),
};

// ---- which conversation goes where ---------------------------------------

function isMine(conv) {
  return conv.state === "assigned" && conv.agent === me.username;
}

function inTab(conv, tab) {
  if (tab === "queue") return conv.state === "queued";
  if (tab === "mine") return isMine(conv);
  return true;
}

// Conversations whose new visitor messages deserve a sound.
function isWatched(conv) {
  return conv.state === "queued" || isMine(conv);
}

function sortForTab(items, tab) {
  if (tab === "queue") {
    // Oldest waiting first: that is the order visitors were promised.
    return items.sort((a, b) => (a.created || 0) - (b.created || 0));
  }
  return items.sort((a, b) => (b.updated || 0) - (a.updated || 0));
}

// ---- list rendering -------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function renderList() {
  const all = Array.from(state.convs.values());
  for (const tab of ["queue", "mine", "all"]) {
    const count = all.filter((c) => inTab(c, tab)).length;
    document.querySelector(`[data-count="${tab}"]`).textContent = String(count);
  }

  const nodes =
    state.tab === "past"
      ? pastNodes()
      : sortForTab(all.filter((c) => inTab(c, state.tab)), state.tab).map(renderItem);
  els.list.replaceChildren(...nodes);
  els.empty.hidden = nodes.length > 0;

  const total = all.filter(isWatched).reduce((sum, c) => sum + (c.unread || 0), 0);
  setUnreadTotal(total);
}

function renderItem(conv) {
  const li = el("li", "conv-item");
  li.dataset.id = conv.id;
  li.dataset.state = conv.state;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", String(conv.id === state.openId));
  li.tabIndex = 0;

  const top = el("div", "conv-top");
  const name = el("span", "conv-name", conv.visitor_name || "访客");
  if (conv.visitor_online) name.classList.add("online");
  top.append(name, el("span", "tag channel", channelLabel(conv.channel)));
  top.append(el("span", `tag state-${conv.state}`, stateLabel(conv)));
  if (conv.unread > 0) top.append(el("span", "unread", conv.unread));

  const bottom = el("div", "conv-bottom");
  bottom.append(el("span", "preview", conv.preview || ""));
  bottom.append(el("time", "when", formatTime(conv.updated, true)));

  li.append(top, bottom);
  li.addEventListener("click", () => openConversation(conv.id));
  li.addEventListener("keydown", (event) => {
    if (event.key === "Enter") openConversation(conv.id);
  });
  return li;
}

// ---- conversation pane ----------------------------------------------------

function openConversation(id) {
  if (state.openId !== id) {
    state.openId = id;
    state.seen = new Set();
    state.seenNotes = new Set();
    hideTransferMenu();
    els.messages.replaceChildren();
    suggestions.clear();
    canned.close();
    hideTyping();
    els.input.value = "";
    if (state.noteMode) setNoteMode(false); // a note is for this chat only
  }
  state.openSummary = state.convs.get(id) || state.openSummary;
  els.paneEmpty.hidden = true;
  els.view.hidden = false;
  renderPaneHead();
  renderList();
  sendFrame({ type: "open", conversation_id: id });
}

function renderPaneHead() {
  const conv = state.openSummary;
  if (!conv) return;
  els.name.textContent = conv.visitor_name || "访客";
  els.stateTag.textContent = stateLabel(conv);
  els.stateTag.dataset.state = conv.state;

  const closed = conv.state === "closed";
  const takenByOther = conv.state === "assigned" && !isMine(conv);
  els.claim.hidden = closed || isMine(conv);
  els.claim.disabled = takenByOther;
  els.claim.textContent = takenByOther ? `已由 ${conv.agent_name || conv.agent} 接入` : "接入";
  els.close.hidden = closed;
  els.transfer.hidden = !canTransfer(conv);
  if (els.transfer.hidden) hideTransferMenu();
  // Notes may still be written on a closed conversation; replies may not.
  const writable = !closed || state.noteMode;
  els.input.disabled = !writable;
  els.send.disabled = !writable;
  els.cannedOpen.disabled = closed;
  if (closed) canned.close();
  renderReplyMode(closed);
}

function renderReplyMode(closed = state.openSummary?.state === "closed") {
  els.noteToggle.setAttribute("aria-pressed", String(state.noteMode));
  els.form.classList.toggle("note-mode", state.noteMode);
  els.send.textContent = state.noteMode ? "添加备注" : "发送";
  if (state.noteMode) {
    els.input.placeholder = "内部备注：只有客服能看到，访客看不到。Enter 保存";
  } else {
    els.input.placeholder = closed ? "会话已结束" : "输入回复，Enter 发送，Shift+Enter 换行，/ 快捷回复";
  }
}

// ---- transfer to another agent ----------------------------------------------

// Its agent may hand a conversation on, anyone an unassigned one, an admin any.
function canTransfer(conv) {
  if (!conv || conv.state === "closed") return false;
  return !conv.agent || conv.agent === me.username || me.role === "admin";
}

function agentLabel(username) {
  const name = state.agentNames[username];
  return name && name !== username ? `${name}（${username}）` : username;
}

function renderTransferMenu() {
  const conv = state.openSummary;
  const targets = state.online.filter((u) => u !== me.username && u !== conv?.agent);
  const items = targets.map((username) => {
    const li = el("li");
    const button = el("button", null, agentLabel(username));
    button.type = "button";
    button.dataset.username = username;
    button.addEventListener("click", () => {
      if (state.openId) sendFrame({ type: "transfer", conversation_id: state.openId, to: username });
      hideTransferMenu();
    });
    li.append(button);
    return li;
  });
  els.transferList.replaceChildren(...items);
  els.transferEmpty.hidden = items.length > 0;
}

function hideTransferMenu() {
  els.transferMenu.hidden = true;
  els.transfer.setAttribute("aria-expanded", "false");
}

function toggleTransferMenu() {
  if (!els.transferMenu.hidden) {
    hideTransferMenu();
    return;
  }
  renderTransferMenu();
  els.transferMenu.hidden = false;
  els.transfer.setAttribute("aria-expanded", "true");
}

function renderVisitor(visitor, conv) {
  const fields = {
    name: visitor.name || conv.visitor_name,
    channel: channelLabel(visitor.channel || conv.channel),
    page: visitor.page || conv.page || "—",
    first_seen: formatTime(visitor.first_seen || conv.first_seen),
    last_seen: formatTime(visitor.last_seen),
    conversations: visitor.conversations ?? "—",
    online: conv.visitor_online ? "在线" : "离线",
    user_agent: visitor.user_agent || "—",
  };
  for (const [key, value] of Object.entries(fields)) {
    const dd = els.info.querySelector(`[data-field="${key}"]`);
    dd.replaceChildren();
    if (key === "page" && /^https?:\/\//i.test(value)) {
      const link = el("a", null, value);
      link.href = value;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      dd.append(link);
    } else {
      dd.textContent = String(value);
    }
  }
}

function senderName(msg) {
  if (msg.sender === "visitor") return state.openSummary?.visitor_name || "访客";
  if (msg.sender === "robot") return "智能客服";
  if (msg.sender === "agent") return msg.agent_name || "客服";
  return "";
}

function buildMessage(msg) {
  const li = el("li", "msg");
  li.dataset.sender = msg.sender;
  if (msg.sender !== "system") {
    const meta = el("div", "meta");
    meta.append(el("span", "who", senderName(msg)), el("time", "when", formatTime(msg.ts)));
    li.append(meta);
  }
  li.append(el("div", "bubble", msg.text));
  if (Array.isArray(msg.suggestions) && msg.suggestions.length) {
    const list = el("ul", "suggested");
    for (const item of msg.suggestions) list.append(el("li", null, item.question));
    li.append(list);
  }
  return li;
}

function showMessage(msg) {
  if (typeof msg.seq !== "number" || state.seen.has(msg.seq)) return;
  state.seen.add(msg.seq);
  if (msg.client_id && state.pending.has(msg.client_id)) {
    state.pending.get(msg.client_id).el.remove();
    state.pending.delete(msg.client_id);
  }

  const stick = nearBottom();
  const node = buildMessage(msg);
  node.dataset.seq = String(msg.seq);
  insertBySeq(node, msg.seq);
  if (stick || msg.sender === "agent") scrollToEnd();
  if (msg.sender === "visitor") hideTyping();
}

function buildNote(note) {
  const li = el("li", "msg note");
  li.dataset.sender = "note";
  const meta = el("div", "meta");
  meta.append(
    el("span", "note-label", "内部备注"),
    el("span", "who", note.agent_name || note.agent || me.display_name),
    el("time", "when", formatTime(note.ts)),
  );
  li.append(meta, el("div", "bubble", note.text));
  return li;
}

// A note sits after the message that was last when it was written.
function showNote(note) {
  if (typeof note.id !== "number" || state.seenNotes.has(note.id)) return;
  state.seenNotes.add(note.id);
  const item = note.client_id && state.pending.get(note.client_id);
  if (item && item.kind === "note" && note.agent === me.username) {
    item.el.remove();
    state.pending.delete(note.client_id);
  }
  const stick = nearBottom();
  const node = buildNote(note);
  node.dataset.noteId = String(note.id);
  insertBySeq(node, (note.after_seq || 0) + 0.5);
  if (stick || note.agent === me.username) scrollToEnd();
}

// Messages are placed by seq, notes between two seqs; pending ones stay last.
function insertBySeq(node, seq) {
  node.dataset.order = String(seq);
  for (const other of els.messages.children) {
    if (other.classList.contains("pending") || Number(other.dataset.order) > seq) {
      els.messages.insertBefore(node, other);
      return;
    }
  }
  els.messages.append(node);
}

function nearBottom() {
  const box = els.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToEnd() {
  els.messages.scrollTop = els.messages.scrollHeight;
}

function showTyping() {
  els.typing.hidden = false;
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(hideTyping, TYPING_SHOW_MS);
}

function hideTyping() {
  clearTimeout(state.typingTimer);
  els.typing.hidden = true;
}

function isLooking() {
  return document.visibilityState === "visible" && document.hasFocus();
}

function markRead(convId, seq) {
  const conv = state.convs.get(convId);
  if (conv && conv.unread > 0) sendFrame({ type: "read", conversation_id: convId, seq });
}

// ---- frames from the server ---------------------------------------------

function onWelcome(frame) {
  state.attempt = 0;
  showConn("online", "已连接");
  state.convs = new Map((frame.conversations || []).map((c) => [c.id, c]));
  onAgents({ online: frame.agents_online, names: frame.agent_names });
  renderList();
  if (state.tab === "past") sendFrame({ type: "past" });
  if (state.openId) openConversation(state.openId);
  for (const [clientId, item] of state.pending) {
    // A note is resent as a note, never as a message the visitor would see.
    const type = item.kind === "note" ? "note" : "message";
    sendFrame({ type, conversation_id: item.convId, client_id: clientId, text: item.text });
  }
}

function onConversation(frame) {
  const conv = frame.conversation;
  if (!conv || !conv.id) return;
  const before = state.convs.get(conv.id);

  if (conv.state === "closed") {
    state.convs.delete(conv.id);
  } else {
    state.convs.set(conv.id, conv);
  }
  if (conv.id === state.openId) {
    state.openSummary = conv;
    renderPaneHead();
    // Follow a conversation just claimed out of the queue into 我的.
    if (isMine(conv) && before && !isMine(before) && state.tab === "queue") setTab("mine");
  }
  renderList();

  if (conv.state === "queued" && (!before || before.state !== "queued")) {
    alertAgent(conv, "新的排队访客", `${conv.visitor_name || "访客"}：${conv.preview || "请求人工服务"}`);
  }
}

function onMessage(frame) {
  const conv = state.convs.get(frame.conversation_id);
  if (frame.conversation_id === state.openId) {
    showMessage(frame);
    if (frame.sender === "visitor") suggestions.refresh(frame.conversation_id);
  }
  if (frame.sender !== "visitor" || !conv) return;

  // Keep the list fresh even if the matching conversation frame comes later.
  if (frame.seq > (conv.last_seq || 0)) {
    conv.last_seq = frame.seq;
    conv.preview = frame.text;
    conv.updated = frame.ts || conv.updated;
    const viewing = frame.conversation_id === state.openId && isLooking();
    if (!viewing) conv.unread = (conv.unread || 0) + 1;
    renderList();
  }
  if (frame.conversation_id === state.openId && isLooking()) {
    markRead(conv.id, frame.seq);
  } else if (isWatched(conv)) {
    alertAgent(conv, `${conv.visitor_name || "访客"} 发来新消息`, frame.text);
  }
}

function onHistory(frame) {
  if (frame.conversation_id !== state.openId) return;
  const conv = frame.conversation || state.openSummary;
  state.openSummary = conv;
  if (conv && conv.state !== "closed") state.convs.set(conv.id, conv);
  renderPaneHead();
  // On a full disk an archived conversation is shown without restoring it.
  if (frame.archived) els.stateTag.textContent = "已归档 · 只读";
  const past = state.past.find((item) => item.id === frame.conversation_id);
  if (past && !frame.archived) past.archived = false;
  renderVisitor(frame.visitor || {}, conv || {});
  for (const msg of frame.messages || []) showMessage(msg);
  for (const note of frame.notes || []) showNote(note);
  scrollToEnd();
  renderList();
  if (conv && !frame.archived) markRead(conv.id, conv.last_seq);
  suggestions.refresh(frame.conversation_id);
}

// ---- earlier conversations (closed or archived) ----------------------------

function pastNodes() {
  const nodes = state.past.map(renderPastItem);
  if (state.pastMore && state.past.length) {
    const li = el("li", "conv-more");
    const more = el("button", "ghost", "加载更多");
    more.type = "button";
    more.addEventListener("click", () =>
      sendFrame({ type: "past", before: state.past[state.past.length - 1].id }),
    );
    li.append(more);
    nodes.push(li);
  }
  return nodes;
}

function renderPastItem(item) {
  const li = el("li", "conv-item past");
  li.dataset.id = item.id;
  li.dataset.state = item.archived ? "archived" : item.state;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", String(item.id === state.openId));
  li.tabIndex = 0;

  const top = el("div", "conv-top");
  top.append(el("span", "conv-name", item.visitor_name || "访客"));
  top.append(el("span", "tag state-closed", item.archived ? "已归档" : "已结束"));
  const bottom = el("div", "conv-bottom");
  bottom.append(el("span", "preview", `${item.messages} 条消息`));
  bottom.append(el("time", "when", formatTime(item.updated, true)));
  li.append(top, bottom);

  // Opening an archived conversation brings it back from the archive.
  const open = () => {
    state.openSummary = { ...item, state: "closed" };
    openConversation(item.id);
  };
  li.addEventListener("click", open);
  li.addEventListener("keydown", (event) => {
    if (event.key === "Enter") open();
  });
  return li;
}

function onPast(frame) {
  const items = frame.conversations || [];
  state.past = frame.before ? state.past.concat(items) : items;
  state.pastMore = Boolean(frame.more);
  renderList();
}

function onAck(frame) {
  const item = state.pending.get(frame.client_id);
  if (!item) return;
  state.pending.delete(frame.client_id);
  if (item.kind === "note") {
    // The note frame itself normally came first and replaced the pending one.
    if (item.convId !== state.openId || state.seenNotes.has(frame.note_id)) {
      item.el.remove();
      return;
    }
    state.seenNotes.add(frame.note_id);
    item.el.classList.remove("pending");
    item.el.dataset.noteId = String(frame.note_id);
    return;
  }
  if (item.convId !== state.openId || state.seen.has(frame.seq)) {
    item.el.remove();
    return;
  }
  state.seen.add(frame.seq);
  item.el.classList.remove("pending");
  item.el.dataset.seq = String(frame.seq);
  item.el.remove();
  insertBySeq(item.el, frame.seq);
}

const ERROR_TEXT = {
  conflict: "该会话已被其他客服接入",
  not_found: "会话不存在或已结束",
  too_long: "消息太长，请分几次发送",
  bad_text: "消息不能为空",
  rate_limited: "发送太频繁，请稍后再试",
  storage_full: "服务器暂时无法保存消息，请稍后再试",
  unknown_agent: "没有这个客服，无法转接",
  agent_disabled: "该客服已被停用，无法转接",
  agent_offline: "该客服已下线，无法转接",
  conversation_closed: "会话已结束，无法转接",
  same_agent: "会话已由该客服接待",
  notes_full: "这个会话的备注已达上限",
};

function onError(frame) {
  const text = ERROR_TEXT[frame.code] || frame.message || "操作失败";
  toast(els.toasts, { title: "提示", body: text });
  if (frame.client_id && state.pending.has(frame.client_id)) {
    const item = state.pending.get(frame.client_id);
    item.el.classList.add("failed");
    state.pending.delete(frame.client_id);
  }
}

function onNote(frame) {
  if (frame.conversation_id === state.openId) showNote(frame);
}

function onAgents(frame) {
  state.online = frame.online || [];
  state.agentNames = frame.names || {};
  if (!els.transferMenu.hidden) renderTransferMenu();
}

function onTransferred(frame) {
  const conv = frame.conversation;
  if (!conv || !conv.id) return;
  if (conv.state !== "closed") state.convs.set(conv.id, conv);
  if (conv.id === state.openId) {
    state.openSummary = conv;
    renderPaneHead();
  }
  renderList();
  const visitor = conv.visitor_name || "访客";
  if (frame.to === me.username && frame.from !== me.username) {
    alertAgent(conv, "转接给您的会话", `${frame.from_name || frame.from} 将 ${visitor} 转接给您`);
  } else if (frame.from === me.username) {
    toast(els.toasts, { title: "已转接", body: `${visitor} 已转接给 ${frame.to_name || frame.to}` });
  } else if (frame.previous === me.username) {
    toast(els.toasts, { title: "会话已转出", body: `${visitor} 已由 ${frame.from_name || frame.from} 转接给 ${frame.to_name || frame.to}` });
  }
}

function alertAgent(conv, title, body) {
  const open = () => {
    setTab(isMine(conv) ? "mine" : conv.state === "queued" ? "queue" : "all");
    openConversation(conv.id);
  };
  beep();
  toast(els.toasts, { title, body, onClick: open });
  desktopNotify({ title, body, tag: conv.id, onClick: open });
}

const HANDLERS = {
  welcome: onWelcome,
  conversation: onConversation,
  message: onMessage,
  history: onHistory,
  past: onPast,
  ack: onAck,
  error: onError,
  note: onNote,
  agents: onAgents,
  transferred: onTransferred,
  typing: (frame) => {
    if (frame.conversation_id === state.openId && frame.sender === "visitor") showTyping();
  },
};

// ---- socket ---------------------------------------------------------------

function socketUrl() {
  const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  return `${scheme}${window.location.host}/ws/agent`;
}

function sendFrame(frame) {
  if (!state.socket || !state.connected) return false;
  state.socket.send(JSON.stringify(frame));
  return true;
}

function showConn(kind, text) {
  els.conn.dataset.state = kind;
  els.conn.textContent = text;
}

function connect() {
  state.retryTimer = null;
  const socket = new WebSocket(socketUrl());
  state.socket = socket;
  socket.addEventListener("open", () => {
    if (socket !== state.socket) return;
    state.connected = true;
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(() => sendFrame({ type: "ping" }), PING_MS);
  });
  socket.addEventListener("message", (event) => {
    if (socket !== state.socket) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    const handler = frame && HANDLERS[frame.type];
    if (handler) handler(frame);
  });
  socket.addEventListener("close", () => {
    if (socket !== state.socket) return;
    state.socket = null;
    state.connected = false;
    clearInterval(state.pingTimer);
    hideTyping();
    showConn("offline", "连接已断开，正在重连…");
    scheduleReconnect();
  });
}

async function scheduleReconnect() {
  // A refused upgrade looks like any other drop; after a few, check whether
  // the session simply expired and send the agent back to sign in.
  if (state.attempt >= 2 && (await sessionExpired())) {
    window.location.assign("/console/login?next=%2Fconsole");
    return;
  }
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  state.attempt = Math.min(state.attempt + 1, 10);
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(connect, delay);
}

async function sessionExpired() {
  try {
    const res = await fetch("/console", { redirect: "manual", credentials: "same-origin" });
    return res.type === "opaqueredirect" || res.status === 401 || res.status === 403;
  } catch (err) {
    return false; // the server itself is unreachable: keep retrying
  }
}

function reconnectNow() {
  if (state.socket || !state.retryTimer) return;
  clearTimeout(state.retryTimer);
  connect();
}

// ---- agent actions --------------------------------------------------------

function newClientId() {
  state.clientCounter += 1;
  const rand = Math.random().toString(36).slice(2, 8);
  return `a-${Date.now().toString(36)}-${rand}-${state.clientCounter}`;
}

// ``asNote``: null follows the 备注 toggle; false always writes to the shopper.
function sendReply(asNote = null) {
  const text = els.input.value.trim();
  const convId = state.openId;
  if (!text || !convId || els.input.disabled) return;
  els.input.value = "";
  clearTimeout(state.typingSendTimer);
  state.typingSendTimer = null;
  state.lastTypingSent = 0;

  const clientId = newClientId();
  const kind = (asNote === null ? state.noteMode : asNote) ? "note" : "message";
  const node =
    kind === "note"
      ? buildNote({ text, agent: me.username, agent_name: me.display_name, ts: Date.now() })
      : buildMessage({ sender: "agent", text, agent_name: me.display_name, ts: Date.now() });
  node.classList.add("pending");
  node.dataset.clientId = clientId;
  els.messages.append(node);
  scrollToEnd();
  state.pending.set(clientId, { convId, text, el: node, kind });
  sendFrame({ type: kind, conversation_id: convId, client_id: clientId, text });
  els.input.focus();
}

function setNoteMode(on) {
  state.noteMode = on;
  renderPaneHead();
  renderReplyMode();
  els.input.focus();
}

// At most one typing frame per TYPING_EVERY_MS; keystrokes inside the window
// are reported once it ends, so a short burst still reaches the visitor.
function signalTyping() {
  if (state.typingSendTimer || state.noteMode) return; // a note is not for the visitor
  const wait = state.lastTypingSent + TYPING_EVERY_MS - Date.now();
  if (wait > 0) {
    state.typingSendTimer = setTimeout(() => {
      state.typingSendTimer = null;
      signalTyping();
    }, wait);
    return;
  }
  if (state.openId && els.input.value && !els.input.disabled) {
    if (sendFrame({ type: "typing", conversation_id: state.openId })) state.lastTypingSent = Date.now();
  }
}

function setTab(tab) {
  state.tab = tab;
  if (tab === "past") sendFrame({ type: "past" });
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === tab));
  }
  renderList();
}

for (const button of document.querySelectorAll("[data-tab]")) {
  button.addEventListener("click", () => setTab(button.dataset.tab));
}
els.claim.addEventListener("click", () => {
  if (state.openId) sendFrame({ type: "claim", conversation_id: state.openId });
});
els.transfer.addEventListener("click", toggleTransferMenu);
document.addEventListener("click", (event) => {
  if (!els.transferMenu.hidden && !event.target.closest(".transfer-wrap")) hideTransferMenu();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") hideTransferMenu();
});
els.noteToggle.addEventListener("click", () => setNoteMode(!state.noteMode));
els.close.addEventListener("click", () => {
  if (state.openId) sendFrame({ type: "close", conversation_id: state.openId });
});
els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  sendReply();
});
els.input.addEventListener("keydown", (event) => {
  if (canned.handleKey(event)) return; // the open 快捷回复 list took the key
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendReply();
  }
});
els.input.addEventListener("input", signalTyping);
window.addEventListener("online", reconnectNow);
window.addEventListener("focus", () => {
  const conv = state.openId && state.convs.get(state.openId);
  if (conv) markRead(conv.id, conv.last_seq);
});

function refreshNotifyButton(permission = notificationPermission()) {
  els.notifyBtn.hidden = permission !== "default";
}
els.notifyBtn.addEventListener("click", () => askNotificationPermission().then(refreshNotifyButton));

// FAQ answers beside the reply box: fill the box, or send at once.
const suggestions = setupSuggestions({
  fill(text) {
    els.input.value = text;
    els.input.focus();
  },
  send(text) {
    // The button says 发送: the answer goes to the shopper, even in note mode.
    els.input.value = text;
    sendReply(false);
  },
});

// Canned replies: the 快捷回复 button, or "/" at the start of the reply box.
const canned = setupCanned({ input: els.input, onInsert: signalTyping });

setBaseTitle("客服工作台 · goflypy");
unlockOnFirstGesture(refreshNotifyButton);
refreshNotifyButton();
connect();
