// The chat page: the page keeps the conversation and sends all of it each turn (the server keeps none);
// the reply is read piece by piece from a stream of newline-delimited JSON events.
"use strict";

const history = [];
let reading = null;  // the AbortController of the reply being read

const field = (id) => document.getElementById(id);

function settings() {
  return {
    temperature: Number(field("temperature").value),
    top_k: Number(field("top-k").value),
    max_new_tokens: Number(field("max-new-tokens").value),
  };
}

function bubble(role, text) {
  const node = element("div", `turn ${role}`, text);
  field("conversation").append(node);
  node.scrollIntoView({block: "end"});
  return node;
}

// Calls onEvent for each JSON line of the response body as it arrives.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    const lines = buffer.split("\n");
    buffer = lines.pop();  // an event not yet complete
    lines.filter(Boolean).forEach((line) => onEvent(JSON.parse(line)));
  }
}

async function send(text) {
  field("message").textContent = "";
  history.push({role: "user", content: text});
  bubble("user", text);
  const reply = bubble("assistant", "");
  reply.dataset.pieces = "0";
  reading = new AbortController();
  field("send").disabled = true;
  let answer = "";
  try {
    const response = await fetch("/api/chat", {
      method: "POST", headers: apiHeaders(), signal: reading.signal,
      body: JSON.stringify({messages: history, ...settings()}),
    });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error(data.error || `${response.status} ${response.statusText}`);
    }
    await readEvents(response, (event) => {
      if (event.error) throw new Error(event.error);
      if (event.text) {
        answer += event.text;
        reply.textContent = visible(answer);
        reply.dataset.pieces = String(Number(reply.dataset.pieces) + 1);
        reply.scrollIntoView({block: "end"});
      }
      if (event.done && !event.finished) reply.append(element("span", "cut", "cut at max new tokens"));
    });
    history.push({role: "assistant", content: answer});
    reply.dataset.done = "true";
  } catch (error) {
    if (error.name === "AbortError") return;
    history.pop();  // the turn did not happen: sending again should not repeat the message
    reply.remove();
    field("message").textContent = error.message;
  } finally {
    field("send").disabled = false;
  }
}

field("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = field("input").value.trim();
  if (!text || field("send").disabled) return;
  field("input").value = "";
  send(text);
});
field("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    field("composer").requestSubmit();
  }
});
field("new").addEventListener("click", () => {
  if (reading) reading.abort();
  history.length = 0;
  field("conversation").replaceChildren();
  field("message").textContent = "";
  field("input").focus();
});

api("/api/info").then((info) => {
  field("checkpoint").textContent = info.checkpoint;
  field("temperature").value = info.chat.temperature;
  field("top-k").value = info.chat.top_k;
  field("max-new-tokens").value = info.chat.max_new_tokens;
  if (!info.rank) field("rank-link").remove();
}).catch((error) => { field("message").textContent = error.message; });
