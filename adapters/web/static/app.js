// callboard web chat: one websocket, JSON text frames (see docs/web-protocol.md).
// Who you are is the server's session (a cookie set by POST session), never a frame field.
(() => {
  "use strict";
  const bot = document.body.dataset.bot;
  const $ = (id) => document.getElementById(id);
  const log = $("log"), status = $("status");
  const store = window.localStorage;
  const key = (k) => `callboard:${bot}:${k}`;
  $("name").value = store.getItem(key("name")) || "guest";
  $("chat").value = store.getItem(key("chat")) || "main";
  $("chat-type").value = store.getItem(key("chat-type")) || "private";

  let ws = null, backoff = 500, userId = "";
  const pending = new Map();   // client_msg_id -> {el, frame} awaiting its ack
  const bubbles = new Map();   // message_id -> element (bot output, for edits and deletes)

  const group = () => $("chat-type").value === "group";
  // a private chat is yours: "<your user id>:<name>"; a group is just its name (no ':')
  const chat = () => group() ? $("chat").value.trim().replace(/:/g, "") : `${userId}:${$("chat").value.trim() || "main"}`;
  const sinceKey = () => key("since:" + chat());
  const since = () => Number(store.getItem(sinceKey()) || 0);
  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());

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

  function send(frame) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame)); }

  function settle(f, text) {
    const p = pending.get(f.client_msg_id);
    if (p) { if (p.el) setMeta(p.el, text); pending.delete(f.client_msg_id); }
  }

  function onFrame(f) {
    switch (f.op) {
      case "hello":
        userId = f.user_id;
        $("me").textContent = f.user_id;
        if (group()) {  // reading a group needs membership: join (a duplicate after the first time)
          send({ op: "join", chat_id: chat(), client_msg_id: `join:${chat()}`, user_name: $("name").value || "guest" });
        }
        send({ op: "subscribe", chat_id: chat(), since: since() });
        break;
      case "ack": settle(f, "✓ stored"); break;
      case "duplicate": settle(f, "✓ (duplicate)"); break;
      case "error": {
        const p = pending.get(f.client_msg_id);
        if (f.code === "busy" && p) {  // not stored: send the same frame again when told
          setMeta(p.el, "busy, retrying…");
          setTimeout(() => send(p.frame), f.retry_after_ms || 1000);
          break;
        }
        if (p) { setMeta(p.el, "✗ not sent"); pending.delete(f.client_msg_id); }
        bubble("error", `${f.code}: ${f.reason}`);
        break;
      }
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

  async function signIn() {
    // renews the session cookie, or makes one: anonymous, or from the token the embedding site put in ?auth=
    const auth = new URLSearchParams(location.search).get("auth");
    const body = auth ? { auth } : { name: $("name").value || "guest" };
    const response = await fetch("session", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      const reason = (await response.json().catch(() => ({}))).error || response.statusText;
      throw new Error(reason);
    }
    return response.json();
  }

  async function connect() {
    try {
      await signIn();
    } catch (err) {
      status.textContent = "not signed in"; status.className = "status off";
      bubble("error", `cannot sign in: ${err.message}`);
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 30000);
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/web/${encodeURIComponent(bot)}/ws`);
    ws.onopen = () => { backoff = 500; status.textContent = "connected"; status.className = "status on"; };
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
    const frame = {
      op: "send", chat_id: chat(), chat_type: $("chat-type").value,
      user_name: $("name").value || "guest", text, client_msg_id: newId(),
    };
    pending.set(frame.client_msg_id, { el: bubble("me", text, "sending…"), frame });
    send(frame);
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
