// The knowledge-base editor: entries, unanswered questions, vocabulary,
// files, the agents' canned replies, and the "try it" box. Every stored text is inserted with textContent.

import { formatTime } from "./labels.js";

const PAGE_SIZE = 50;
const STATUS_EVERY_MS = 3000;
const ACTIONS = {
  answer: "直接回答",
  suggest: "推荐相关问题",
  handoff: "转人工（未找到答案）",
  greeting: "问候",
  human: "访客要求人工",
  order: "订单查询（不走知识库）",
};

// Why the robot did not answer with the best entry (Decision.held_back).
const HELD_BACK = {
  sibling_term: "问题说的是知识库没有覆盖的同类产品",
  other_goods: "最相近的条目讲的是另一种商品",
  which_goods: "最相近的几条分别讲不同商品，问题没说明是哪一种",
};

const $ = (sel) => document.querySelector(sel);
const app = $("#kb-app");
const csrf = app.dataset.csrf;

const state = { offset: 0, total: 0, editing: null, searchTimer: null, entries: new Map() };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function button(text, className, onClick) {
  const node = el("button", className, text);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

// ---- talking to the server ------------------------------------------------

async function api(method, path, body, raw) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
  if (raw !== undefined) {
    init.body = raw;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch (err) {
    data = null;
  }
  if (res.status === 401) window.location.assign("/console/login?next=%2Fconsole%2Fkb");
  if (!res.ok) {
    const error = new Error((data && data.message) || `请求失败（${res.status}）`);
    error.data = data;
    throw error;
  }
  return data;
}

function notify(text, kind = "ok") {
  const box = $("#kb-notice");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
}

async function run(action) {
  try {
    await action();
  } catch (err) {
    notify(err.message, "error");
  }
}

function savedText(result, done) {
  return result && result.indexed === false ? `${done}，索引更新中…` : done;
}

// ---- tabs -------------------------------------------------------------------

function setTab(name) {
  for (const tab of document.querySelectorAll("[data-kb-tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.kbTab === name));
  }
  for (const panel of document.querySelectorAll("[data-kb-panel]")) {
    panel.hidden = panel.dataset.kbPanel !== name;
  }
  if (name === "unanswered") run(loadUnanswered);
  if (name === "vocabulary") run(loadVocabulary);
  if (name === "canned") run(loadCanned);
}

// ---- entries ----------------------------------------------------------------

async function loadEntries() {
  const params = new URLSearchParams({
    q: $("#kb-search").value.trim(),
    category: $("#kb-category-filter").value,
    offset: String(state.offset),
    limit: String(PAGE_SIZE),
  });
  const data = await api("GET", `/api/kb/entries?${params}`);
  state.total = data.total;
  state.entries = new Map(data.entries.map((e) => [e.faq_id, e]));
  renderCategories(data.categories);
  $("#kb-list").replaceChildren(...data.entries.map(renderEntry));
  $("#kb-empty").hidden = data.entries.length > 0;
  $("#kb-total").textContent = `共 ${data.total} 条（知识库 ${data.all} 条）`;
  const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
  $("#kb-page").textContent = `第 ${Math.floor(state.offset / PAGE_SIZE) + 1} / ${pages} 页`;
  $("#kb-prev").disabled = state.offset === 0;
  $("#kb-next").disabled = state.offset + PAGE_SIZE >= data.total;
}

function renderCategories(categories) {
  const filter = $("#kb-category-filter");
  const chosen = filter.value;
  const options = [el("option", null, "全部分类")];
  options[0].value = "";
  for (const name of categories) {
    const option = el("option", null, name);
    option.value = name;
    options.push(option);
  }
  filter.replaceChildren(...options);
  filter.value = categories.includes(chosen) ? chosen : "";
  $("#kb-categories").replaceChildren(
    ...categories.map((name) => {
      const option = el("option");
      option.value = name;
      return option;
    }),
  );
}

function renderEntry(entry) {
  const row = el("tr", "kb-row");
  row.dataset.id = entry.faq_id;
  const question = el("td", "kb-q");
  question.append(el("strong", null, entry.question), el("p", "kb-answer", entry.answer));
  const actions = el("td", "kb-row-actions");
  actions.append(
    button("编辑", "plain kb-edit", () => openForm(entry)),
    button("删除", "danger kb-delete", () => run(() => deleteEntry(entry))),
  );
  row.append(
    el("td", "kb-id", entry.faq_id),
    question,
    el("td", "kb-cat-col", entry.category || "—"),
    el("td", "kb-alts", entry.alternatives.join(" / ") || "—"),
    actions,
  );
  return row;
}

function openForm(entry) {
  state.editing = entry ? entry.faq_id : null;
  $("#kb-form-title").textContent = entry ? `编辑条目 ${entry.faq_id}` : "新建条目";
  $("#kb-id").value = entry ? entry.faq_id : "";
  $("#kb-id").readOnly = Boolean(entry);
  $("#kb-question").value = entry ? entry.question : "";
  $("#kb-alternatives").value = entry ? entry.alternatives.join("\n") : "";
  $("#kb-answer").value = entry ? entry.answer : "";
  $("#kb-category").value = entry ? entry.category : "";
  $("#kb-form").hidden = false;
  $("#kb-question").focus();
}

function closeForm() {
  state.editing = null;
  $("#kb-form").hidden = true;
}

async function saveEntry() {
  const body = {
    faq_id: $("#kb-id").value.trim(),
    question: $("#kb-question").value,
    alternatives: $("#kb-alternatives").value.split("\n"),
    answer: $("#kb-answer").value,
    category: $("#kb-category").value,
  };
  const id = state.editing;
  const result = id
    ? await api("PUT", `/api/kb/entries/${encodeURIComponent(id)}`, body)
    : await api("POST", "/api/kb/entries", body);
  closeForm();
  notify(savedText(result, `已保存条目 ${result.entry.faq_id}`));
  await loadEntries();
}

async function deleteEntry(entry) {
  if (!window.confirm(`确定删除条目“${entry.question}”吗？`)) return;
  const result = await api("DELETE", `/api/kb/entries/${encodeURIComponent(entry.faq_id)}`);
  notify(savedText(result, `已删除条目 ${entry.faq_id}`));
  await loadEntries();
}

// ---- unanswered -----------------------------------------------------------

async function loadUnanswered() {
  const data = await api("GET", "/api/kb/unanswered");
  $("#kb-unanswered-count").textContent = String(data.total);
  $("#kb-unanswered").replaceChildren(...data.items.map(renderUnanswered));
  $("#kb-unanswered-empty").hidden = data.items.length > 0;
  const ids = await api("GET", "/api/kb/entries?limit=500");
  $("#kb-ids").replaceChildren(
    ...ids.entries.map((entry) => {
      const option = el("option", null, entry.question);
      option.value = entry.faq_id;
      return option;
    }),
  );
}

function renderUnanswered(item) {
  const li = el("li", "kb-un");
  li.dataset.key = item.key;
  const head = el("div", "kb-un-head");
  head.append(
    el("strong", "kb-un-text", item.text),
    el("span", "tag", `${item.count} 次`),
    el("span", "tag", ACTIONS[item.action] || item.action),
    el("span", "muted", `最高分 ${Number(item.score).toFixed(3)}`),
    el("time", "when", formatTime(item.last)),
  );

  const pick = el("select", "kb-un-target");
  pick.setAttribute("aria-label", "加到哪个条目");
  for (const c of item.candidates || []) {
    const option = el("option", null, `${c.question}（${c.faq_id}，${Number(c.score).toFixed(2)}）`);
    option.value = c.faq_id;
    pick.append(option);
  }
  const other = el("option", null, "其他条目…");
  other.value = "";
  pick.append(other);
  const custom = el("input", "kb-un-other");
  custom.setAttribute("list", "kb-ids");
  custom.placeholder = "输入条目编号";
  custom.hidden = pick.value !== "";
  pick.addEventListener("change", () => {
    custom.hidden = pick.value !== "";
  });

  const adopt = button("添加为相似问法", "primary kb-un-adopt", () =>
    run(async () => {
      const faqId = pick.value || custom.value.trim();
      if (!faqId) throw new Error("请选择或输入一个条目编号");
      await api("POST", `/api/kb/unanswered/${item.key}/adopt`, { faq_id: faqId });
      notify(`已把“${item.text}”加为 ${faqId} 的相似问法`);
      await loadUnanswered();
    }),
  );
  const dismiss = button("忽略", "plain kb-un-dismiss", () =>
    run(async () => {
      await api("DELETE", `/api/kb/unanswered/${item.key}`);
      await loadUnanswered();
    }),
  );
  const row = el("div", "kb-un-actions");
  row.append(pick, custom, adopt, dismiss);
  li.append(head, row);
  return li;
}

// ---- vocabulary -----------------------------------------------------------

async function loadVocabulary() {
  const data = await api("GET", "/api/kb/vocabulary");
  $("#kb-shipped").textContent = String(data.shipped_synonyms);
  $("#kb-syn-list").replaceChildren(...data.synonyms.map(renderGroup));
  $("#kb-word-list").replaceChildren(...data.words.map(renderWord));
  const rules = data.categories || [];
  $("#kb-cat-list").replaceChildren(...rules.map(renderRule));
  $("#kb-cat-empty").hidden = rules.length > 0;
  const shipped = Object.entries(data.shipped_categories || {});
  $("#kb-cat-shipped-count").textContent = String(shipped.length);
  $("#kb-cat-shipped-list").replaceChildren(
    ...shipped.map(([topic, members]) => {
      const li = el("li", "kb-chip kb-shipped-rule");
      li.dataset.topic = topic;
      li.append(el("strong", null, topic), el("span", null, `：${members.join("、")}`));
      return li;
    }),
  );
}

function renderRule(rule) {
  const li = el("li", "kb-chip kb-rule");
  li.dataset.topic = rule.topic;
  li.append(el("strong", null, rule.topic), el("span", null, `：${rule.members.join("、")}`));
  li.append(
    button("编辑", "plain kb-rule-edit", () => {
      $("#kb-cat-topic").value = rule.topic;
      $("#kb-cat-members").value = rule.members.join("\n");
      $("#kb-cat-replaces").value = rule.topic;
      $("#kb-cat-topic").focus();
    }),
    button("删除", "danger kb-rule-delete", () =>
      run(async () => {
        const result = await api("DELETE", `/api/kb/categories/${encodeURIComponent(rule.topic)}`);
        notify(savedText(result, `已删除类别规则“${rule.topic}”`));
        await loadVocabulary();
      }),
    ),
  );
  return li;
}

function renderGroup(group) {
  const li = el("li", "kb-chip");
  li.dataset.canonical = group.canonical;
  li.append(el("strong", null, group.canonical), el("span", null, ` ← ${group.variants.join("、")}`));
  li.append(
    button("编辑", "plain", () => {
      $("#kb-syn-canonical").value = group.canonical;
      $("#kb-syn-variants").value = group.variants.join("\n");
      $("#kb-syn-replaces").value = group.canonical;
    }),
    button("删除", "danger", () =>
      run(async () => {
        const result = await api("DELETE", `/api/kb/synonyms/${encodeURIComponent(group.canonical)}`);
        notify(savedText(result, `已删除同义词组“${group.canonical}”`));
        await loadVocabulary();
      }),
    ),
  );
  return li;
}

function renderWord(word) {
  const li = el("li", "kb-chip");
  li.dataset.word = word.word;
  li.append(el("strong", null, word.word), el("span", "muted", ` ${word.freq}`));
  li.append(
    button("删除", "danger", () =>
      run(async () => {
        const result = await api("DELETE", `/api/kb/words/${encodeURIComponent(word.word)}`);
        notify(savedText(result, `已删除词语“${word.word}”`));
        await loadVocabulary();
      }),
    ),
  );
  return li;
}

async function saveGroup() {
  const body = {
    canonical: $("#kb-syn-canonical").value,
    variants: $("#kb-syn-variants").value.split("\n"),
    replaces: $("#kb-syn-replaces").value || null,
  };
  const result = await api("POST", "/api/kb/synonyms", body);
  $("#kb-syn-form").reset();
  $("#kb-syn-replaces").value = "";
  notify(savedText(result, `已保存同义词组“${result.group.canonical}”`));
  await loadVocabulary();
}

async function saveRule() {
  const body = {
    topic: $("#kb-cat-topic").value,
    members: $("#kb-cat-members").value.split("\n"),
    replaces: $("#kb-cat-replaces").value || null,
  };
  const result = await api("POST", "/api/kb/categories", body);
  $("#kb-cat-form").reset();
  $("#kb-cat-replaces").value = "";
  notify(savedText(result, `已保存类别规则“${result.rule.topic}”`));
  await loadVocabulary();
}

async function saveWord() {
  const result = await api("POST", "/api/kb/words", {
    word: $("#kb-word").value,
    freq: $("#kb-word-freq").value,
  });
  $("#kb-word-form").reset();
  notify(savedText(result, `已添加词语“${result.word.word}”`));
  await loadVocabulary();
}

// ---- canned replies ---------------------------------------------------------

async function loadCanned() {
  const data = await api("GET", "/api/console/canned");
  $("#kb-canned-limit").textContent = String(data.limit);
  $("#kb-canned-list").replaceChildren(...data.replies.map(renderCanned));
  $("#kb-canned-empty").hidden = data.replies.length > 0;
}

function renderCanned(reply) {
  const li = el("li", "kb-chip kb-canned");
  li.dataset.id = reply.reply_id;
  const body = el("div", "kb-canned-body");
  body.append(el("strong", "kb-canned-title", reply.title), el("p", "kb-answer", reply.text));
  li.append(
    body,
    button("编辑", "plain kb-canned-edit", () => {
      $("#kb-canned-form-title").textContent = `编辑快捷回复“${reply.title}”`;
      $("#kb-canned-id").value = reply.reply_id;
      $("#kb-canned-title").value = reply.title;
      $("#kb-canned-text").value = reply.text;
      $("#kb-canned-text").focus();
    }),
    button("删除", "danger kb-canned-delete", () =>
      run(async () => {
        if (!window.confirm(`确定删除快捷回复“${reply.title}”吗？`)) return;
        await api("DELETE", `/api/console/canned/${encodeURIComponent(reply.reply_id)}`);
        notify(`已删除快捷回复“${reply.title}”`);
        await loadCanned();
      }),
    ),
  );
  return li;
}

async function saveCanned() {
  const body = {
    reply_id: $("#kb-canned-id").value || null,
    title: $("#kb-canned-title").value,
    text: $("#kb-canned-text").value,
  };
  const result = await api("POST", "/api/console/canned", body);
  $("#kb-canned-form").reset();
  notify(`已保存快捷回复“${result.reply.title}”`);
  await loadCanned();
}

// ---- files ----------------------------------------------------------------

function showImportProblems(data) {
  const list = $("#kb-import-problems");
  list.replaceChildren();
  const problems = (data && Array.isArray(data.problems)) ? data.problems : [];
  for (const problem of problems) list.append(el("li", "", problem));
  if (data && data.more > 0) list.append(el("li", "muted", `…… 另有 ${data.more} 处问题未列出`));
  list.hidden = list.children.length === 0;
}

async function importFile() {
  showImportProblems(null);
  const file = $("#kb-import-file").files[0];
  if (!file) throw new Error("请选择文件");
  const mode = document.querySelector('#kb-import-form input[name="mode"]:checked').value;
  if (mode === "replace" && !window.confirm(
    `“替换”会删除知识库中不在“${file.name}”里的全部条目，确定继续吗？`,
  )) return;
  const params = new URLSearchParams({ name: file.name, mode });
  let result;
  try {
    result = await api("POST", `/api/kb/import?${params}`, undefined, file);
  } catch (err) {
    showImportProblems(err.data);
    throw err;
  }
  notify(`已导入 ${result.imported} 条，删除 ${result.removed} 条，索引更新中…`);
  state.offset = 0;
  await loadEntries();
}

// ---- try it ---------------------------------------------------------------

async function tryRobot() {
  const text = $("#try-input").value;
  if (!text.trim()) return;
  const decision = await api("POST", "/api/kb/try", { text });
  const why = HELD_BACK[decision.held_back];
  const action = ACTIONS[decision.action] || decision.action;
  $("#try-action").textContent = why ? `${action}：${why}` : action;
  $("#try-action").dataset.action = decision.action;
  $("#try-score").textContent = Number(decision.score).toFixed(3);
  $("#try-reply").textContent = decision.reply;
  $("#try-top").replaceChildren(
    ...decision.candidates.map((c) => {
      const li = el("li", "kb-top-item");
      li.dataset.id = c.faq_id;
      li.append(
        el("span", "kb-top-score", Number(c.score).toFixed(3)),
        el("strong", null, c.question),
        el("span", "muted", ` ${c.faq_id}`),
        el("p", "kb-answer", c.answer),
      );
      return li;
    }),
  );
  $("#try-result").hidden = false;
}

// ---- index state ----------------------------------------------------------

async function pollStatus() {
  try {
    const data = await api("GET", "/api/kb/status");
    const badge = $("#kb-index-state");
    badge.dataset.state = data.indexing ? "connecting" : "online";
    badge.textContent = data.indexing ? `索引更新中（${data.pending}）` : "索引已同步";
    $("#kb-unanswered-count").textContent = String(data.unanswered);
  } catch (err) {
    $("#kb-index-state").dataset.state = "offline";
  }
  setTimeout(pollStatus, STATUS_EVERY_MS);
}

// ---- wiring ---------------------------------------------------------------

for (const tab of document.querySelectorAll("[data-kb-tab]")) {
  tab.addEventListener("click", () => setTab(tab.dataset.kbTab));
}
$("#kb-new").addEventListener("click", () => openForm(null));
$("#kb-cancel").addEventListener("click", closeForm);
$("#kb-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(saveEntry);
});
$("#kb-search").addEventListener("input", () => {
  clearTimeout(state.searchTimer);
  state.searchTimer = setTimeout(() => {
    state.offset = 0;
    run(loadEntries);
  }, 250);
});
$("#kb-category-filter").addEventListener("change", () => {
  state.offset = 0;
  run(loadEntries);
});
$("#kb-prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE_SIZE);
  run(loadEntries);
});
$("#kb-next").addEventListener("click", () => {
  state.offset += PAGE_SIZE;
  run(loadEntries);
});
$("#kb-syn-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(saveGroup);
});
$("#kb-syn-form").addEventListener("reset", () => {
  $("#kb-syn-replaces").value = "";
});
$("#kb-cat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(saveRule);
});
$("#kb-cat-form").addEventListener("reset", () => {
  $("#kb-cat-replaces").value = "";
});
$("#kb-word-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(saveWord);
});
$("#kb-canned-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(saveCanned);
});
$("#kb-canned-form").addEventListener("reset", () => {
  $("#kb-canned-id").value = "";
  $("#kb-canned-form-title").textContent = "新建快捷回复";
});
$("#kb-import-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(importFile);
});
$("#try-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(tryRobot);
});
$("#try-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    run(tryRobot);
  }
});

run(loadEntries);
pollStatus();
// /console/kb#canned (the console's 管理 link) opens the canned replies.
if (window.location.hash === "#canned") setTab("canned");
