// What both pages share: this tab's id, and JSON requests whose {"error": ...} becomes an Error.
"use strict";

function tabId() {
  // sessionStorage lives as long as the tab and survives a reload; another tab starts with its own
  let id = sessionStorage.getItem("llm-tab");
  if (!id) {
    // randomUUID exists only on secure origins (localhost is one; a LAN address is not)
    id = window.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2);
    sessionStorage.setItem("llm-tab", id);
  }
  return id;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;  // text, never HTML: replies are model output
  return node;
}
