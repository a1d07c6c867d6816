// The annotation page: one 10-frame item at a time, votes with buttons or H/S/U, undo.
"use strict";

const FPS = 5;
const $ = (id) => document.getElementById(id);
const state = { item: null, frames: [], frame: 0, timer: null, busy: false };

function setStatus(text) {
  $("status").textContent = text;
}

function showFrame(i) {
  state.frame = i;
  if (state.frames.length) $("frame").src = state.frames[i];
  $("slider").value = String(i);
  $("frame-no").textContent = `${i + 1}/${state.frames.length || 10}`;
}

function play(on) {
  clearInterval(state.timer);
  state.timer = null;
  if (on) {
    state.timer = setInterval(() => showFrame((state.frame + 1) % state.frames.length), 1000 / FPS);
  }
  $("play").textContent = on ? "Pause" : "Play";
}

function applyDisplay() {
  $("frame").style.filter = `contrast(${$("contrast").value}%) brightness(${$("brightness").value}%)`;
}

function showProgress(p) {
  $("progress").max = Math.max(p.total, 1);
  $("progress").value = p.voted;
  $("progress-text").textContent = `${p.voted} of ${p.total} items voted`;
}

// Show the next item: ``next`` as returned with a vote or undo, else asked for.
async function loadNext(next) {
  document.body.dataset.state = "loading";
  play(false);
  state.frames.forEach((u) => URL.revokeObjectURL(u));
  state.frames = [];
  next = next || (await api("GET", "/api/next"));
  showProgress(next.progress);
  if (next.item_id === null) {
    state.item = null;
    $("work").hidden = true;
    $("done-box").hidden = false;
    document.body.dataset.state = "done";
    return;
  }
  const q = "/api/frame?item=" + encodeURIComponent(next.item_id) + "&f=";
  const urls = [];
  for (let f = 0; f < next.frames; f++) urls.push(fetchBlobUrl(q + f));
  state.frames = await Promise.all(urls);
  state.item = next.item_id;
  $("slider").max = String(state.frames.length - 1);
  showFrame(0);
  play(true);
  document.body.dataset.item = next.item_id;
}

async function run(action) {
  if (state.busy) return;
  state.busy = true;
  try {
    await action();
  } catch (err) {
    if (err.status === 401) {
      setToken("");
      location.reload();
    }
    setStatus("Error: " + err.message);
    document.body.dataset.state = "error";
  } finally {
    state.busy = false;
  }
  // "ready" only once input is taken again: a vote key pressed while busy is ignored.
  if (state.item && document.body.dataset.state === "loading") {
    document.body.dataset.state = "ready";
  }
}

function vote(label) {
  if (!state.item) return;
  run(async () => {
    const item = state.item;
    const r = await api("POST", "/api/vote", { item_id: item, label, why: $("why").value.trim() });
    $("why").value = "";
    setStatus(`Voted ${label}.`);
    await loadNext(r.next);
  });
}

function undo() {
  run(async () => {
    const r = await api("POST", "/api/undo");
    setStatus(`Undone: your ${r.label} vote; the item is shown again.`);
    await loadNext(r.next);
  });
}

async function start() {
  const me = await api("GET", "/api/me");
  $("who").textContent = "annotator: " + me.name;
  $("login-box").hidden = true;
  $("work").hidden = false;
  await loadNext();
}

function init() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("token").value.trim());
    run(start);
  });
  for (const b of document.querySelectorAll("#buttons [data-label]")) {
    b.addEventListener("click", () => vote(b.dataset.label));
  }
  $("undo").addEventListener("click", undo);
  $("play").addEventListener("click", () => play(state.timer === null));
  $("slider").addEventListener("input", () => {
    play(false);
    showFrame(Number($("slider").value));
  });
  $("contrast").addEventListener("input", applyDisplay);
  $("brightness").addEventListener("input", applyDisplay);
  $("reset-display").addEventListener("click", () => {
    $("contrast").value = "100";
    $("brightness").value = "100";
    applyDisplay();
  });
  document.addEventListener("keydown", (e) => {
    const typing = e.target.tagName === "TEXTAREA" || ["text", "password"].includes(e.target.type);
    if (typing || e.ctrlKey || e.metaKey || e.altKey || $("work").hidden) return;
    const key = e.key.toLowerCase();
    const labels = { h: "healthy", s: "sick", u: "unsure" };
    if (key in labels) vote(labels[key]);
    else if (key === "z") undo();
    else if (key === " ") play(state.timer === null);
    else return;
    e.preventDefault();
  });
  if (getToken()) run(start);
}

init();
