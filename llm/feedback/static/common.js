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

function token() {
  // a server exposed beyond this machine prints each rater an address ending in #token=...; the tab keeps it
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    sessionStorage.setItem("llm-token", given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("llm-token");
}

function apiHeaders() {
  const headers = {"Content-Type": "application/json"};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  return headers;
}

async function api(path, body) {
  const options = body === undefined ? {headers: apiHeaders()} : {method: "POST", headers: apiHeaders(), body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok) {
    const error = new Error(data.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// Bidirectional controls reorder what is shown ("evil" drawn as "live"): shown as visible marks instead
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function visible(text) {
  return text.replace(BIDI_CONTROLS, (c) => `<U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}>`);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = visible(text);  // text, never HTML: replies are model output
  return node;
}
