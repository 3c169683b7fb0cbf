// callboard web chat: one websocket, JSON text frames (see adapters/web/protocol.py).
(() => {
  "use strict";
  const bot = document.body.dataset.bot;
  const $ = (id) => document.getElementById(id);
  const log = $("log"), status = $("status");
  const store = window.localStorage;
  const key = (k) => `callboard:${bot}:${k}`;
  const userId = store.getItem(key("user")) || ("u-" + Math.random().toString(36).slice(2, 10));
  store.setItem(key("user"), userId);
  $("name").value = store.getItem(key("name")) || "guest";
  $("chat").value = store.getItem(key("chat")) || ("c-" + userId.slice(2));
  $("chat-type").value = store.getItem(key("chat-type")) || "private";

  let ws = null, backoff = 500;
  const pending = new Map();   // client_msg_id -> element awaiting its ack
  const bubbles = new Map();   // message_id -> element (bot output, for edits and deletes)

  const chat = () => $("chat").value.trim();
  const sinceKey = () => key("since:" + chat());
  const since = () => Number(store.getItem(sinceKey()) || 0);

  function bubble(cls, text, meta) {
    const el = document.createElement("div");
    el.className = "msg " + cls;
    el.textContent = text;
    if (meta) { const m = document.createElement("span"); m.className = "meta"; m.textContent = meta; el.appendChild(m); }
    log.appendChild(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  function setMeta(el, text) {
    let m = el.querySelector(".meta");
    if (!m) { m = document.createElement("span"); m.className = "meta"; el.appendChild(m); }
    m.textContent = text;
  }

  function onFrame(f) {
    switch (f.op) {
      case "ack": { const el = pending.get(f.client_msg_id); if (el) { setMeta(el, "✓ stored"); pending.delete(f.client_msg_id); } break; }
      case "duplicate": { const el = pending.get(f.client_msg_id); if (el) { setMeta(el, "✓ (duplicate)"); pending.delete(f.client_msg_id); } break; }
      case "error": bubble("error", `${f.code}: ${f.reason}`); break;
      case "message": {
        if (f.chat_id !== chat()) break;
        if (f.seq <= since()) break;
        store.setItem(sinceKey(), String(f.seq));
        const el = bubble("bot", f.text || "(attachment)", "bot");
        el.dataset.messageId = f.message_id;
        bubbles.set(f.message_id, el);
        break;
      }
      case "edited": {
        if (f.seq > since()) store.setItem(sinceKey(), String(f.seq));
        const el = bubbles.get(f.message_id);
        if (el) { el.firstChild.textContent = f.text; setMeta(el, "bot (edited)"); }
        break;
      }
      case "deleted": {
        if (f.seq > since()) store.setItem(sinceKey(), String(f.seq));
        const el = bubbles.get(f.message_id);
        if (el) { el.classList.add("deleted"); el.firstChild.textContent = "(deleted)"; }
        break;
      }
      case "typing": status.textContent = "bot is typing…"; setTimeout(() => { status.textContent = "connected"; }, 2000); break;
      default: break;
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/web/${encodeURIComponent(bot)}/ws`);
    ws.onopen = () => {
      backoff = 500;
      status.textContent = "connected"; status.className = "status on";
      ws.send(JSON.stringify({ op: "subscribe", chat_id: chat(), since: since() }));
    };
    ws.onmessage = (e) => { try { onFrame(JSON.parse(e.data)); } catch (err) { console.error(err); } };
    ws.onclose = () => {
      status.textContent = "reconnecting…"; status.className = "status off";
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 10000);
    };
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
    const id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    const el = bubble("me", text, "sending…");
    pending.set(id, el);
    ws.send(JSON.stringify({
      op: "send", chat_id: chat(), chat_type: $("chat-type").value, user_id: userId,
      user_name: $("name").value || "guest", text, client_msg_id: id,
    }));
    $("text").value = "";
  });

  for (const id of ["name", "chat", "chat-type"]) {
    $(id).addEventListener("change", () => {
      store.setItem(key(id), $(id).value);
      if (id !== "name" && ws) { log.textContent = ""; bubbles.clear(); ws.close(); }
    });
  }
  connect();
})();
