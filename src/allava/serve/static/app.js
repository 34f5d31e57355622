// The chat page of `allava serve`: plain JS, no libraries, talks to /v1/chat/completions with stream: true.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { messages: [], image: null, model: null, busy: false, abort: null };

function add(kind, text, image) {
  const div = document.createElement("div");
  div.className = "msg " + kind;
  if (image) { const img = document.createElement("img"); img.src = image; div.appendChild(img); }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  div.appendChild(span);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function errorText(resp) {
  try { const body = await resp.json(); if (body.error && body.error.message) return `${resp.status}: ${body.error.message}`; }
  catch (e) { /* not JSON */ }
  return `${resp.status}: ${resp.statusText || "request failed"}`;
}

async function loadModel() {
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) { $("model").textContent = "model list: " + (await errorText(resp)); return; }
    const body = await resp.json();
    state.model = body.data[0].id;
    $("model").textContent = "model: " + state.model;
  } catch (e) { $("model").textContent = "server unreachable: " + e.message; }
}

function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { add("error", `${file.name}: not an image`); return; }
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result;  // a data: URL, what the API takes
    $("preview").src = state.image;
    $("preview").hidden = false;
    $("drop-hint").hidden = true;
  };
  reader.onerror = () => add("error", `${file.name}: could not be read`);
  reader.readAsDataURL(file);
}

function clearImage() {
  state.image = null;
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("drop-hint").hidden = false;
  $("file").value = "";
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

async function ask(text) {
  const content = state.image
    ? [{ type: "image_url", image_url: { url: state.image } }, { type: "text", text }]
    : text;
  const shown = state.image;
  const userMsg = { role: "user", content };
  add("user", text, shown);
  clearImage();
  const reply = add("assistant", "");
  reply.dataset.done = "false";
  const out = reply.querySelector(".text");
  setBusy(true);
  state.abort = new AbortController();
  const body = { messages: state.messages.concat([userMsg]), stream: true,
                 max_tokens: Number($("max-tokens").value) || undefined,
                 temperature: Number($("temperature").value) || 0 };
  if (state.model) body.model = state.model;
  let answer = "";
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                                        signal: state.abort.signal });
    if (!resp.ok) throw new Error(await errorText(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") { done = true; break; }
        const parsed = JSON.parse(data);
        if (parsed.error) throw new Error(parsed.error.message);
        const delta = parsed.choices && parsed.choices[0] && parsed.choices[0].delta;
        if (delta && delta.content) { answer += delta.content; out.textContent = answer; }
      }
    }
    state.messages.push(userMsg, { role: "assistant", content: answer });
  } catch (e) {
    if (e.name === "AbortError") { state.messages.push(userMsg, { role: "assistant", content: answer }); }
    else { reply.remove(); add("error", e.message); }  // the failed question is not kept in the history
  } finally {
    reply.dataset.done = "true";
    setBusy(false);
    state.abort = null;
  }
}

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("question").value.trim();
  if (!text || state.busy) return;
  $("question").value = "";
  ask(text);
});
$("question").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").requestSubmit(); }
});
$("stop").addEventListener("click", () => state.abort && state.abort.abort());
$("new").addEventListener("click", () => {
  if (state.abort) state.abort.abort();
  state.messages = [];
  clearImage();
  $("log").replaceChildren();
});
$("file").addEventListener("change", () => setImage($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  setImage(ev.dataTransfer.files[0]);
});
$("key").value = localStorage.getItem("allava-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("allava-key", $("key").value); loadModel(); });
loadModel();
