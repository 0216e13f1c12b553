// The reports page (报表): summary cards, two inline SVG charts, the daily
// table, agents' workload and the most handed-off questions. Everything is
// built with DOM APIs; every text goes in through textContent.

const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// ---- formatting -------------------------------------------------------------

function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(1)}%`;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} 秒`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} 分 ${seconds % 60} 秒`;
  return `${Math.floor(minutes / 60)} 小时 ${minutes % 60} 分`;
}

function rating(figures) {
  const { count, average } = figures.ratings;
  return count ? `${average.toFixed(2)} 分（${count} 条）` : "—";
}

const shortDate = (iso) => iso.slice(5).replace("-", "/");

// A moment in the report's time zone (the days are that zone's days).
function zoned(ms, zone) {
  const parts = new Intl.DateTimeFormat("zh-CN", {
    timeZone: zone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  }).formatToParts(new Date(ms));
  const part = Object.fromEntries(parts.map((p) => [p.type, p.value]));
  return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}`;
}

// ---- talking to the server --------------------------------------------------

async function fetchReport(days) {
  const res = await fetch(`/api/reports?days=${days}`, { credentials: "same-origin" });
  let data = null;
  try {
    data = await res.json();
  } catch (err) {
    data = null;
  }
  if (res.status === 401) {
    window.location.href = `/console/login?next=${encodeURIComponent("/console/reports")}`;
    return null;
  }
  if (!res.ok) throw new Error((data && data.message) || `请求失败（${res.status}）`);
  return data;
}

function notice(text) {
  const node = $("#reports-notice");
  node.textContent = text || "";
  node.hidden = !text;
}

// ---- cards ------------------------------------------------------------------

function card(key, label, value, detail) {
  const node = el("div", "report-card");
  node.dataset.card = key;
  node.append(el("div", "report-card-label", label), el("div", "report-card-value", value));
  if (detail) node.append(el("div", "report-card-detail", detail));
  return node;
}

function renderCards(report) {
  const t = report.totals;
  const robot = t.robot;
  const box = $("#reports-cards");
  box.replaceChildren(
    card(
      "started",
      "新会话",
      t.started,
      t.archived_started ? `其中 ${t.archived_started} 个已归档` : "",
    ),
    card("visitor_messages", "访客消息", t.visitor_messages),
    card("handed_to_human", "转人工会话", t.handed_to_human),
    card(
      "answer_rate",
      "机器人解决率",
      percent(t.answer_rate),
      `直接回答 ${robot.answered} · 推荐 ${robot.suggested} · 转人工 ${robot.handed_off}`,
    ),
    card(
      "first_response",
      "首次响应（中位数）",
      duration(t.first_response.median_ms),
      t.first_response.count
        ? `P90 ${duration(t.first_response.p90_ms)} · ${t.first_response.count} 个会话`
        : "暂无人工响应",
    ),
    card(
      "ratings",
      "满意度",
      t.ratings.count ? `${t.ratings.average.toFixed(2)} 分` : "—",
      t.ratings.count ? `${t.ratings.count} 条评价` : "暂无评价",
    ),
  );
}

// ---- charts -----------------------------------------------------------------

const CHART = { width: 640, height: 220, left: 36, right: 12, top: 12, bottom: 28 };

// A round top for the value axis whose half is round too.
function niceMax(value) {
  if (value <= 4) return 4;
  const step = 2 * 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
}

function chartFrame(label, max, format) {
  const root = svg("svg", {
    viewBox: `0 0 ${CHART.width} ${CHART.height}`,
    role: "img",
    class: "chart",
    preserveAspectRatio: "none",
  });
  root.append(svg("title", {}, label));
  const plotH = CHART.height - CHART.top - CHART.bottom;
  for (const share of [0, 0.5, 1]) {
    const y = CHART.top + plotH * (1 - share);
    root.append(
      svg("line", { x1: CHART.left, x2: CHART.width - CHART.right, y1: y, y2: y, class: "grid" }),
      svg("text", { x: CHART.left - 4, y: y + 4, class: "axis", "text-anchor": "end" }, format(max * share)),
    );
  }
  return root;
}

function xLabels(root, days, slot) {
  const every = Math.ceil(days.length / 10);
  days.forEach((day, i) => {
    if (i % every !== 0 && i !== days.length - 1) return;
    const x = CHART.left + slot * (i + 0.5);
    root.append(
      svg("text", { x, y: CHART.height - 8, class: "axis", "text-anchor": "middle" }, shortDate(day.date)),
    );
  });
}

function barChart(days) {
  const series = [
    { key: "started", label: "新会话", className: "bar-started" },
    { key: "handed_to_human", label: "转人工", className: "bar-handed" },
  ];
  const max = niceMax(Math.max(0, ...days.flatMap((d) => series.map((s) => d[s.key]))));
  const root = chartFrame("每日新会话与转人工", max, (v) => Math.round(v));
  const plotW = CHART.width - CHART.left - CHART.right;
  const plotH = CHART.height - CHART.top - CHART.bottom;
  const slot = plotW / days.length;
  const barW = Math.max(2, (slot * 0.7) / series.length);
  days.forEach((day, i) => {
    series.forEach((s, j) => {
      const h = (day[s.key] / max) * plotH;
      const bar = svg("rect", {
        x: CHART.left + slot * i + slot * 0.15 + barW * j,
        y: CHART.top + plotH - h,
        width: barW,
        height: h,
        class: `bar ${s.className}`,
      });
      bar.append(svg("title", {}, `${day.date} ${s.label} ${day[s.key]}`));
      root.append(bar);
    });
  });
  xLabels(root, days, slot);
  return root;
}

function lineChart(days) {
  const root = chartFrame("机器人每日解决率", 1, (v) => `${Math.round(v * 100)}%`);
  const plotW = CHART.width - CHART.left - CHART.right;
  const plotH = CHART.height - CHART.top - CHART.bottom;
  const slot = plotW / days.length;
  const points = [];
  days.forEach((day, i) => {
    if (day.answer_rate === null) return;
    const x = CHART.left + slot * (i + 0.5);
    const y = CHART.top + plotH * (1 - day.answer_rate);
    points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    const dot = svg("circle", { cx: x, cy: y, r: 3.5, class: "dot" });
    dot.append(svg("title", {}, `${day.date} ${percent(day.answer_rate)}`));
    root.append(dot);
  });
  if (points.length > 1) {
    root.insertBefore(svg("polyline", { points: points.join(" "), class: "line" }), root.querySelector("circle"));
  }
  xLabels(root, days, slot);
  return root;
}

function legend(items) {
  const box = el("div", "chart-legend");
  for (const [className, label] of items) {
    const item = el("span", "legend-item");
    item.append(el("span", `legend-swatch ${className}`), document.createTextNode(label));
    box.append(item);
  }
  return box;
}

function renderCharts(report) {
  $("#chart-conversations").replaceChildren(
    barChart(report.daily),
    legend([
      ["bar-started", "新会话"],
      ["bar-handed", "转人工"],
    ]),
  );
  const rated = report.daily.some((d) => d.answer_rate !== null);
  const box = $("#chart-answer-rate");
  box.replaceChildren(lineChart(report.daily));
  if (!rated) box.append(el("p", "muted", "统计期内机器人还没有回答过问题"));
}

// ---- tables -----------------------------------------------------------------

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) tr.append(el("td", "", cell));
  return tr;
}

function renderDaily(report) {
  const body = $("#reports-daily tbody");
  const rows = [...report.daily].reverse().map((d) =>
    row([
      d.date,
      d.started,
      d.visitor_messages,
      d.handed_to_human,
      d.robot.answered,
      d.robot.suggested,
      d.robot.handed_off,
      percent(d.answer_rate),
      duration(d.first_response.median_ms),
      duration(d.first_response.p90_ms),
      rating(d),
    ]),
  );
  body.replaceChildren(...rows);
}

function renderAgents(report) {
  const body = $("#reports-agents tbody");
  body.replaceChildren(
    ...report.agents.map((a) => {
      const tr = row([a.display_name, a.conversations, a.messages]);
      tr.dataset.agent = a.username;
      tr.firstChild.title = a.username;
      return tr;
    }),
  );
  $("#reports-agents-empty").hidden = report.agents.length > 0;
}

function renderQuestions(report) {
  const list = $("#reports-questions");
  list.replaceChildren(
    ...report.top_questions.map((q) => {
      const item = el("li", "reports-question");
      item.append(
        el("span", "reports-question-text", q.text),
        el("span", "muted", `${q.count} 次 · 最近 ${zoned(q.last, report.timezone)}`),
      );
      return item;
    }),
  );
  $("#reports-questions-empty").hidden = report.top_questions.length > 0;
}

// ---- the page ---------------------------------------------------------------

async function show(days) {
  for (const b of document.querySelectorAll("[data-days]")) {
    b.setAttribute("aria-pressed", String(b.dataset.days === String(days)));
  }
  notice("");
  try {
    const report = await fetchReport(days);
    if (!report) return;
    const first = report.daily[0].date;
    const last = report.daily[report.daily.length - 1].date;
    $("#reports-range").textContent = `${first} 至 ${last}（${report.timezone}）`;
    $("#reports-generated").textContent = `数据生成于 ${zoned(report.generated, report.timezone)}`;
    renderCards(report);
    renderCharts(report);
    renderDaily(report);
    renderAgents(report);
    renderQuestions(report);
    document.body.dataset.loaded = String(days);
  } catch (err) {
    notice(err.message || "加载报表失败");
  }
}

for (const b of document.querySelectorAll("[data-days]")) {
  b.addEventListener("click", () => show(Number(b.dataset.days)));
}
show(7);
