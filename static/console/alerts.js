// Ways the console gets an agent's attention: a short tone, a flashing tab
// title, an in-page toast and, when allowed, a desktop notification.

const TOAST_MS = 8000;
const FLASH_MS = 1000;

let audio = null;
let baseTitle = document.title;
let flashTimer = null;
let flashOn = false;
let unreadTotal = 0;

// Browsers only let audio start after a user gesture; the first click on the
// page unlocks it and, if undecided, asks for notification permission.
export function unlockOnFirstGesture(onPermissionChange) {
  const unlock = () => {
    window.removeEventListener("pointerdown", unlock, true);
    window.removeEventListener("keydown", unlock, true);
    ensureAudio();
    askNotificationPermission().then(onPermissionChange);
  };
  window.addEventListener("pointerdown", unlock, true);
  window.addEventListener("keydown", unlock, true);
}

function ensureAudio() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return null;
  if (!audio) {
    try {
      audio = new Ctx();
    } catch (err) {
      return null;
    }
  }
  if (audio.state === "suspended") audio.resume().catch(() => {});
  return audio;
}

export function askNotificationPermission() {
  if (!("Notification" in window)) return Promise.resolve("unsupported");
  if (Notification.permission !== "default") {
    return Promise.resolve(Notification.permission);
  }
  try {
    return Promise.resolve(Notification.requestPermission()).catch(() => "default");
  } catch (err) {
    return Promise.resolve("default");
  }
}

export function notificationPermission() {
  return "Notification" in window ? Notification.permission : "unsupported";
}

// Two quick rising tones, about a third of a second in all.
export function beep() {
  const ctx = ensureAudio();
  if (!ctx || ctx.state !== "running") return;
  const start = ctx.currentTime;
  [880, 1320].forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const t0 = start + i * 0.16;
    osc.type = "sine";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t0);
    gain.gain.exponentialRampToValueAtTime(0.25, t0 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.14);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t0);
    osc.stop(t0 + 0.15);
  });
}

export function setBaseTitle(title) {
  baseTitle = title;
  renderTitle();
}

// The tab title shows the unread count and blinks while there is any.
export function setUnreadTotal(count) {
  unreadTotal = count;
  if (count > 0 && !flashTimer) {
    flashTimer = setInterval(() => {
      flashOn = !flashOn;
      renderTitle();
    }, FLASH_MS);
  } else if (count === 0 && flashTimer) {
    clearInterval(flashTimer);
    flashTimer = null;
    flashOn = false;
  }
  renderTitle();
}

function renderTitle() {
  if (unreadTotal > 0) {
    const mark = flashOn ? "【新消息】" : `(${unreadTotal}) `;
    document.title = `${mark}${baseTitle}`;
  } else {
    document.title = baseTitle;
  }
}

export function toast(container, { title, body, onClick }) {
  const el = document.createElement("div");
  el.className = "toast";
  el.setAttribute("role", "alert");
  const head = document.createElement("strong");
  head.textContent = title;
  const text = document.createElement("p");
  text.textContent = body;
  el.append(head, text);
  el.addEventListener("click", () => {
    el.remove();
    if (onClick) onClick();
  });
  container.prepend(el);
  while (container.children.length > 4) container.lastElementChild.remove();
  setTimeout(() => el.remove(), TOAST_MS);
}

export function desktopNotify({ title, body, tag, onClick }) {
  if (notificationPermission() !== "granted") return;
  if (document.visibilityState === "visible" && document.hasFocus()) return;
  try {
    const note = new Notification(title, { body, tag, renotify: true });
    note.onclick = () => {
      window.focus();
      note.close();
      if (onClick) onClick();
    };
  } catch (err) {
    // Some browsers only allow notifications from a service worker.
  }
}
