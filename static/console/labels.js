// Display words for protocol values, in the agents' language.

const CHANNELS = { web: "网页", app: "App", miniapp: "小程序", h5: "H5" };

export function channelLabel(channel) {
  return CHANNELS[channel] || channel || "未知";
}

export function stateLabel(conv) {
  switch (conv.state) {
    case "robot":
      return "机器人接待";
    case "queued":
      return "排队中";
    case "assigned":
      return `${conv.agent_name || conv.agent || "客服"} 接待中`;
    case "closed":
      return "已结束";
    default:
      return conv.state || "";
  }
}

const pad = (n) => String(n).padStart(2, "0");

// "2025-12-04 13:55" or, with short set and the same day, "13:55".
export function formatTime(ms, short = false) {
  if (!ms) return "—";
  const d = new Date(ms);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (short && d.toDateString() === new Date().toDateString()) return hm;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}
