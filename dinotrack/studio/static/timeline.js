// The timeline: a slider, a strip of thumbnails, and marks for the frames that hold a prompt
// and those that hold a computed mask. Arrow keys step (Shift: 10 frames), space plays.

import { tokenUrl } from "./api.js";
import { emit, on, store } from "./store.js";

const slider = document.getElementById("frame-slider");
const label = document.getElementById("frame-label");
const marks = document.getElementById("marks");
const strip = document.getElementById("thumbs");
const playButton = document.getElementById("play");
let timer = null;
const THUMB_HEIGHT = 48; // CSS pixels

/** Shows `frame` (the user's move: it stops the view following a propagation). */
export function goTo(frame) {
  emit("interacted");
  const clamped = Math.max(0, Math.min(store.video.frames - 1, frame));
  if (clamped === store.frame) return;
  store.frame = clamped;
  emit("frame");
}

function updatePosition() {
  slider.value = store.frame;
  const name = store.video.names ? store.video.names[store.frame] : "";
  label.textContent = `frame ${store.frame} / ${store.video.frames - 1}${name ? `  (${name})` : ""}`;
  for (const thumb of strip.querySelectorAll(".current")) thumb.classList.remove("current");
  const current = strip.children[store.frame];
  if (current) {
    current.classList.add("current");
    current.scrollIntoView({ block: "nearest", inline: "center" });
  }
}

function drawMarks() {
  const width = (marks.width = marks.clientWidth * window.devicePixelRatio || 600);
  const height = (marks.height = 14 * window.devicePixelRatio);
  const ctx = marks.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const n = store.video.frames;
  const step = width / n;
  ctx.fillStyle = "#3f8cff";
  for (const frame of store.results) ctx.fillRect(frame * step, height * 0.55, Math.max(1, step), height * 0.45);
  ctx.fillStyle = "#ffd23f";
  for (const frame of store.prompts) ctx.fillRect(frame * step, 0, Math.max(2, step), height * 0.5);
  ctx.strokeStyle = "#ffffff";
  ctx.lineWidth = Math.max(1, window.devicePixelRatio);
  ctx.strokeRect(store.frame * step + 0.5, 0.5, Math.max(2, step) - 1, height - 1);
  for (const [index, thumb] of [...strip.children].entries()) {
    thumb.classList.toggle("has-prompt", store.prompts.has(index));
    thumb.classList.toggle("has-result", store.results.has(index));
  }
}

function buildStrip() {
  const thumbs = [];
  for (let frame = 0; frame < store.video.frames; frame += 1) {
    const thumb = document.createElement("button");
    thumb.className = "thumb";
    thumb.title = `frame ${frame}`;
    thumb.dataset.frame = frame;
    const image = document.createElement("img");
    image.loading = "lazy";
    // Its size before it loads, so that the strip does not shift as thumbnails arrive.
    image.height = THUMB_HEIGHT;
    image.width = Math.round((THUMB_HEIGHT * store.video.width) / store.video.height);
    image.alt = `frame ${frame}`;
    image.src = tokenUrl(`api/frames/${frame}`, { thumb: 1 });
    thumb.append(image);
    thumb.addEventListener("click", () => goTo(frame));
    thumbs.push(thumb);
  }
  strip.replaceChildren(...thumbs);
}

export function togglePlay() {
  if (timer) {
    clearInterval(timer);
    timer = null;
    playButton.textContent = "▶";
    playButton.title = "play (space)";
    return;
  }
  playButton.textContent = "❚❚";
  playButton.title = "pause (space)";
  if (store.frame >= store.video.frames - 1) goTo(0); // played to the end: again from the start
  timer = setInterval(() => {
    if (store.frame >= store.video.frames - 1) togglePlay();
    else goTo(store.frame + 1);
  }, 1000 / Math.min(30, store.video.fps || 24));
}

export function setup() {
  slider.max = store.video.frames - 1;
  slider.addEventListener("input", () => goTo(Number(slider.value)));
  document.getElementById("prev").addEventListener("click", () => goTo(store.frame - 1));
  document.getElementById("next").addEventListener("click", () => goTo(store.frame + 1));
  playButton.addEventListener("click", togglePlay);
  window.addEventListener("keydown", (event) => {
    if (event.target.closest("input:not([type=range]), textarea, select")) return;
    if (event.key === " " && event.target.closest("button")) return; // the button's own click
    const stride = event.shiftKey ? 10 : 1;
    if (event.key === "ArrowRight") goTo(store.frame + stride);
    else if (event.key === "ArrowLeft") goTo(store.frame - stride);
    else if (event.key === "Home") goTo(0);
    else if (event.key === "End") goTo(store.video.frames - 1);
    else if (event.key === " ") togglePlay();
    else return;
    event.preventDefault();
  });
  marks.addEventListener("click", (event) => {
    const box = marks.getBoundingClientRect();
    goTo(Math.floor(((event.clientX - box.left) / box.width) * store.video.frames));
  });
  window.addEventListener("resize", drawMarks);
  buildStrip();
  on("frame", () => {
    updatePosition();
    drawMarks();
  });
  on("marks", drawMarks);
  updatePosition();
  drawMarks();
}
