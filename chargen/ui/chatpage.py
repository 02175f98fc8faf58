"""The chat page ``chargen serve`` shows at ``/``: one self-contained HTML file, no CDN.

It keeps the conversation in the browser, sends it to ``/v1/chat/completions`` with
``stream: true`` and shows the reply as the server-sent events arrive (fetch + ReadableStream).
"""

from __future__ import annotations

import html
import json

from ..generation.settings import SamplingSettings
from ..limits import SERVE_MAX_TEMPERATURE, SERVE_MAX_TOKENS

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chargen: __TITLE__</title>
<style>
 body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f4f4f6; color: #222; }
 header { padding: .6em 1em; background: #2d3142; color: #fff; display: flex; gap: 1.2em; align-items: center;
          flex-wrap: wrap; }
 header b { font-size: 1.1em; margin-right: auto; }
 header label { font-size: .9em; }
 header input[type=number], header input[type=password] { width: 6em; }
 #messages { max-width: 52em; margin: 0 auto; padding: 1em; height: calc(100vh - 9em); overflow-y: auto; }
 .msg { white-space: pre-wrap; font-family: ui-monospace, monospace; padding: .5em .8em; margin: .5em 0;
        border-radius: 8px; max-width: 90%; }
 .user { background: #d7e3fc; margin-left: auto; }
 .bot { background: #fff; border: 1px solid #ddd; }
 .error { background: #fde2e2; border: 1px solid #e99; }
 form { max-width: 52em; margin: 0 auto; display: flex; gap: .5em; padding: 0 1em; }
 textarea { flex: 1; font: inherit; padding: .5em; height: 3em; }
 button { font: inherit; padding: 0 1.2em; }
</style></head>
<body>
<header><b>chargen &middot; __TITLE__</b>
 <label>temperature <input id="temperature" type="range" min="0" max="__MAX_TEMP__" step="0.05" value="__TEMP__">
  <span id="temperature-value">__TEMP__</span></label>
 <label>max length <input id="max-tokens" type="number" min="1" max="__MAX_TOKENS__" value="__LENGTH__"></label>
 __KEY_FIELD__
 <button id="reset" type="button">new chat</button>
</header>
<div id="messages"></div>
<form id="form"><textarea id="input" placeholder="Type a message; Enter sends, Shift-Enter starts a new line"></textarea>
<button id="send" type="submit">Send</button></form>
<script>
"use strict";
const MODEL = __MODEL__;
const history = [];
const $ = (id) => document.getElementById(id);
const temp = $("temperature");
temp.oninput = () => { $("temperature-value").textContent = temp.value; };
$("reset").onclick = () => { history.length = 0; $("messages").textContent = ""; };
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
function bubble(kind, text) {
  const div = document.createElement("div");
  div.className = "msg " + kind;
  div.textContent = text;
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}
$("form").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("input").value;
  if (!text.trim()) return;
  $("input").value = "";
  $("send").disabled = true;
  bubble("user", text);
  history.push({role: "user", content: text});
  const reply = bubble("bot", "");
  const headers = {"Content-Type": "application/json"};
  const key = $("api-key") ? $("api-key").value : "";
  if (key) headers["Authorization"] = "Bearer " + key;
  try {
    const response = await fetch("/v1/chat/completions", {method: "POST", headers, body: JSON.stringify({
      model: MODEL, messages: history, stream: true,
      temperature: Number(temp.value), max_tokens: Number($("max-tokens").value)})});
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const piece = chunk.choices[0].delta.content;
        if (piece) { reply.textContent += piece; $("messages").scrollTop = $("messages").scrollHeight; }
      }
    }
    history.push({role: "assistant", content: reply.textContent});
    reply.dataset.done = "true";
  } catch (err) {
    history.pop();
    reply.className = "msg error";
    reply.textContent = "error: " + err.message;
    reply.dataset.done = "true";
  } finally {
    $("send").disabled = false;
    $("input").focus();
  }
};
</script>
</body></html>
"""

KEY_FIELD = '<label>API key <input id="api-key" type="password" autocomplete="off"></label>'


def chat_page(model_id: str, needs_key: bool = False) -> str:
    """The page, for the model ``model_id``; with a key field when the server wants one."""
    defaults = SamplingSettings()
    replacements = {"__TITLE__": html.escape(model_id), "__MODEL__": json.dumps(model_id).replace("<", "\\u003c"),
                    "__MAX_TEMP__": f"{SERVE_MAX_TEMPERATURE:g}", "__TEMP__": f"{defaults.temp:g}",
                    "__MAX_TOKENS__": str(SERVE_MAX_TOKENS), "__LENGTH__": str(min(defaults.length, SERVE_MAX_TOKENS)),
                    "__KEY_FIELD__": KEY_FIELD if needs_key else ""}
    page = PAGE
    for marker, value in replacements.items():
        page = page.replace(marker, value)
    return page
