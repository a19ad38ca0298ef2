// The ranking page: one prompt at a time for this tab, K replies, a place (1 = best) for each.
"use strict";

const tab = tabId();
const buttons = ["submit", "skip", "all-bad", "undo"].map((id) => document.getElementById(id));
let item = null;

function say(text, isError) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.classList.toggle("error", Boolean(isError));
}

function showPrompt(prompt) {
  const section = document.getElementById("prompt");
  section.replaceChildren(...prompt.map((m) => element("p", `turn ${m.role}`, m.content)));
}

function showReplies(replies) {
  const list = document.getElementById("replies");
  list.replaceChildren(...replies.map((reply, index) => {
    const select = element("select", "place");
    select.setAttribute("aria-label", `Place of reply ${index + 1}`);
    select.append(element("option", "", "–"));
    replies.forEach((_, place) => select.append(element("option", "", String(place + 1))));
    select.options[0].value = "";
    const row = element("li", "reply");
    row.append(select, element("div", "text", reply.text || "(empty reply)"));
    if (!reply.finished) row.append(element("span", "cut", "cut off: did not finish"));
    return row;
  }));
}

function show(state) {
  item = state.item;
  const progress = state.progress;
  document.getElementById("progress").textContent = `${progress.ranked} of ${progress.target} ranked`;
  document.getElementById("prompt").dataset.itemId = item ? item.id : "";
  if (!item) {
    showPrompt([{role: "note", content: "No prompts left to rank. Type one of your own below."}]);
    showReplies([]);
    return;
  }
  showPrompt(item.prompt);
  showReplies(item.replies);
}

// Places [2, 1, 2] -> groups of reply indices best first [[1], [0, 2]]; null while a reply has no place.
function rankingFromPlaces() {
  const places = [...document.querySelectorAll("#replies select")].map((s) => Number(s.value));
  if (places.some((place) => !place)) return null;
  return [...new Set(places)].sort((a, b) => a - b).map((place) => places.flatMap((p, i) => (p === place ? [i] : [])));
}

function busy(on) {
  buttons.forEach((button) => { button.disabled = on; });
  document.body.classList.toggle("busy", on);
}

async function act(request, done) {
  busy(true);
  try {
    const outcome = await request();
    if (done) say(done(outcome));
    show(await api("/api/rank/current", {tab}));
  } catch (error) {
    say(error.message, true);
    if (error.status === 409) await api("/api/rank/current", {tab}).then(show, () => {});  // another page answered it: move on
  } finally {
    busy(false);
  }
}

function give(status, ranking) {
  return act(() => api("/api/rank/give", {tab, id: item.id, ranking, status}),
             (outcome) => ({ranked: "Saved.", skipped: "Skipped.", all_bad: "Saved as all bad."})[outcome.status]);
}

document.getElementById("submit").addEventListener("click", () => {
  if (!item) return;
  const ranking = rankingFromPlaces();
  if (!ranking) return say("Give every reply a place first.", true);
  give("ranked", ranking);
});
document.getElementById("skip").addEventListener("click", () => item && give("skipped", []));
document.getElementById("all-bad").addEventListener("click", () => item && give("all_bad", []));
document.getElementById("undo").addEventListener("click", () => act(
  () => api("/api/rank/undo", {tab}), (outcome) => (outcome.undone ? "Undone: rank it again." : "Nothing to undo in this tab.")));
document.getElementById("own").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("own-text");
  act(() => api("/api/rank/prompt", {tab, text: input.value}), () => { input.value = ""; return "Your prompt."; });
});

say("Sampling replies…");
act(async () => null, () => "");
