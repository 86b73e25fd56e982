// The frame view: one canvas at the frame's own resolution (scaled by CSS to fit), showing the
// frame, the masks over it and what the active tool is drawing.

import { tokenUrl } from "./api.js";
import { overlayImage } from "./labels.js";
import { hiddenIds, labelsOf, store } from "./store.js";

const canvas = document.getElementById("view-canvas");
const context = canvas.getContext("2d");
const overlayCanvas = document.createElement("canvas");
const images = new Map(); // frame -> HTMLImageElement, a small cache for playing and stepping
const IMAGE_CACHE = 48;

let shown = { frame: -1, image: null, labels: null };
let decoration = () => {}; // the active tool's drawing, on top of the masks

// Zoom (the mouse wheel, around the pointer) and pan (drag with the middle button, or with Alt
// held); the 0 key resets. A CSS transform: framePoint() reads the transformed box, so the
// tools need to know nothing about it.
const zoom = { scale: 1, x: 0, y: 0 };
const MAX_ZOOM = 8;
let pan = null; // the last pointer position while panning

function applyZoom() {
  if (zoom.scale <= 1) Object.assign(zoom, { scale: 1, x: 0, y: 0 });
  canvas.style.transform =
    zoom.scale === 1 ? "" : `translate(${zoom.x}px, ${zoom.y}px) scale(${zoom.scale})`;
}

function onWheel(event) {
  event.preventDefault();
  const scale = Math.min(MAX_ZOOM, Math.max(1, zoom.scale * Math.exp(-event.deltaY * 0.002)));
  const box = canvas.getBoundingClientRect();
  const ratio = scale / zoom.scale; // the point under the pointer stays where it is
  zoom.x += (event.clientX - box.left) * (1 - ratio);
  zoom.y += (event.clientY - box.top) * (1 - ratio);
  zoom.scale = scale;
  applyZoom();
}

export function resetZoom() {
  zoom.scale = 1;
  applyZoom();
}

export function setup() {
  canvas.width = store.video.width;
  canvas.height = store.video.height;
  overlayCanvas.width = store.video.width;
  overlayCanvas.height = store.video.height;
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("mousedown", (event) => {
    if (event.button === 1) event.preventDefault(); // no auto-scroll on a middle-button pan
  });
  // Registered before the tools' handlers, so that a pan never reaches them.
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 1 && !(event.button === 0 && event.altKey)) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    canvas.setPointerCapture(event.pointerId);
    pan = [event.clientX, event.clientY];
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!pan) return;
    event.stopImmediatePropagation();
    zoom.x += event.clientX - pan[0];
    zoom.y += event.clientY - pan[1];
    pan = [event.clientX, event.clientY];
    applyZoom();
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!pan) return;
    event.stopImmediatePropagation();
    pan = null;
  });
}

/** The frame's image element, loading (and caching) it when needed. */
export function frameImage(frame) {
  let image = images.get(frame);
  if (!image) {
    image = new Image();
    image.decoding = "async";
    image.src = tokenUrl(`api/frames/${frame}`);
    images.set(frame, image);
    if (images.size > IMAGE_CACHE) images.delete(images.keys().next().value);
  }
  return image;
}

function loaded(image) {
  if (image.complete && image.naturalWidth) return Promise.resolve();
  return new Promise((resolve) => {
    image.addEventListener("load", resolve, { once: true });
    image.addEventListener("error", resolve, { once: true });
  });
}

/** Shows the current frame with its masks; resolves once it is on screen. */
export async function showFrame() {
  const frame = store.frame;
  const image = frameImage(frame);
  const [, entry] = await Promise.all([loaded(image), labelsOf(frame)]);
  if (frame !== store.frame) return; // the user moved on meanwhile
  shown = { frame, image, labels: entry.labels };
  renderOverlay();
  frameImage(Math.min(frame + 1, store.video.frames - 1)); // preload the next one
}

/**
 * Redraws the masks from `labels` (default: the current frame's), e.g. during a stroke;
 * `rect` ({x, y, width, height}) redraws only that part.
 */
export function renderOverlay(labels = null, rect = null) {
  if (labels) shown.labels = labels;
  if (shown.labels) {
    const image = overlayImage(shown.labels, hiddenIds(), store.opacity, rect);
    overlayCanvas.getContext("2d").putImageData(image, rect ? rect.x : 0, rect ? rect.y : 0);
  }
  draw();
}

export function setDecoration(painter) {
  decoration = painter || (() => {});
  draw();
}

export function draw() {
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (shown.image && shown.image.naturalWidth) {
    context.drawImage(shown.image, 0, 0, canvas.width, canvas.height);
  }
  if (shown.labels) context.drawImage(overlayCanvas, 0, 0);
  decoration(context);
}

/** Frame pixel coordinates of a mouse event on the view. */
export function framePoint(event) {
  const box = canvas.getBoundingClientRect();
  return [
    ((event.clientX - box.left) / box.width) * canvas.width,
    ((event.clientY - box.top) / box.height) * canvas.height,
  ];
}

/** How many frame pixels one screen pixel covers (to draw tool outlines one pixel wide). */
export function pixelScale() {
  return canvas.width / canvas.getBoundingClientRect().width;
}

export { canvas };
