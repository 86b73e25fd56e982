// The drawing tools on the frame view. Brush, eraser and polygon edit the current frame's label
// map here (starting from its prompt, else its result mask, so a correction on a tracked frame
// starts from the tracked mask) and PUT it as the frame's prompt when the stroke ends. Box and
// clicks ask the server to grow the active object's mask (POST /api/clicks/{i}).

import { getJson, request, sendJson } from "./api.js";
import { boundsOf, copyLabels, fillPolygon, paintSegment } from "./labels.js";
import { guarded, showStatus } from "./notify.js";
import { emit, forgetLabels, labelsOf, labelsToPng, store } from "./store.js";
import { canvas, draw, framePoint, pixelScale, renderOverlay, setDecoration, showFrame } from "./view.js";

export const tool = { name: "brush", size: 12, positive: true };

let stroke = null; // {frame, labels, before, last: [x, y]} while the brush or eraser is down
let polygon = []; // vertices of the polygon being drawn
let dragBox = null; // {from: [x, y], to: [x, y]} while a box is being dragged
// The clicks and box on one (frame, object), sent whole each time; `clear` asks the server to
// forget the clicks it holds from earlier, so that both sides agree on the list.
let clicks = newClicks(-1, -1);
let hover = null; // [x, y] under the mouse
// [{frame, labels: the prompt before, or null when there was none, clicks: the clicks and box
// before, for an edit made by clicks}]
const undoStack = [];
let edits = Promise.resolve(); // the chain of prompt edits, run one after the other

/**
 * Runs `task` (an edit of a prompt on the server) after the edits before it, so that each
 * starts from the result of the last, however fast the user goes. Resolves to its value.
 */
export function serial(task) {
  const run = edits.then(task);
  edits = run.catch(() => {});
  return run;
}

/** The label map of `frame` once the edits under way are done (what the next edit starts from). */
async function settledLabels(frame) {
  await edits;
  return labelsOf(frame);
}

function newClicks(frame, object) {
  return { frame, object, points: [], box: null, clear: true };
}

/** A copy of the clicks and box on (`frame`, `object`) as they are now. */
function clicksNow(frame, object) {
  const now = clicks.frame === frame && clicks.object === object ? clicks : newClicks(frame, object);
  return { ...now, points: now.points.map((p) => [...p]) };
}

/** Makes sure there is an object to draw: the active one, else a new one. */
async function activeObject() {
  if (store.active !== null) return store.active;
  const object = await sendJson("POST", "api/objects", {});
  store.objects.push(object);
  store.active = object.id;
  emit("objects");
  return object.id;
}

/** Sends a label map as the prompt of `frame` and shows it. */
async function putPrompt(frame, labels) {
  const reply = await request("PUT", `api/prompts/${frame}`, await labelsToPng(labels));
  const body = await reply.json().catch(() => ({}));
  if (body.objects) store.objects = body.objects;
  store.prompts.add(frame);
  store.labels.set(frame, { labels, source: "prompt" });
  emit("objects");
  emit("marks");
  emit("edited");
}

async function deletePrompt(frame) {
  await request("DELETE", `api/prompts/${frame}`);
  store.prompts.delete(frame);
  forgetLabels(frame);
  emit("marks");
  emit("edited");
}

function commit(frame, labels, before) {
  return serial(() => save(frame, labels, before));
}

async function save(frame, labels, before) {
  const empty = !labels.ids.some((id) => id !== 0);
  const saved = await guarded(async () => {
    if (!empty) await putPrompt(frame, labels);
    else if (store.prompts.has(frame)) await deletePrompt(frame);
    return true;
  });
  if (saved && empty) {
    // A prompt needs an object (as `segment --prompt` does): an edit that leaves none drops it.
    remember(frame, before);
    showStatus(`frame ${frame}: no object left, so the frame holds no prompt now`);
  } else if (saved) {
    remember(frame, before);
    showStatus(`frame ${frame}: prompt saved`);
  } else {
    forgetLabels(frame);
  }
  if (frame === store.frame) await showFrame();
}

/** Undoes the last edit of a prompt (stroke, polygon, clicks, loaded file, deletion). */
export function undo() {
  return serial(undoLast);
}

async function undoLast() {
  const last = undoStack.pop();
  if (!last) {
    // The history is the page's: a reload or a restart starts it anew.
    showStatus("nothing to undo (the history starts when the page is opened)");
    return;
  }
  await guarded(async () => {
    if (last.labels) await putPrompt(last.frame, last.labels);
    else if (store.prompts.has(last.frame)) await deletePrompt(last.frame);
    showStatus(`frame ${last.frame}: edit undone`);
  });
  store.frame = last.frame;
  emit("frame"); // forgets the pending clicks...
  if (last.clicks) {
    // ...but a click undone leaves the box and the clicks before it, so that the next click
    // adds to them (sent whole, replacing the server's list, which the restored prompt reset).
    clicks = { ...last.clicks, clear: true };
    drawDecoration();
  }
}

/** Deletes the current frame's prompt. */
export function clearPrompt() {
  return serial(() => clearPromptOf(store.frame));
}

async function clearPromptOf(frame) {
  if (!store.prompts.has(frame)) return;
  const entry = await labelsOf(frame);
  await guarded(async () => {
    await deletePrompt(frame);
    remember(frame, entry.labels);
    showStatus(`frame ${frame}: prompt deleted`);
  });
  await showFrame();
}

/** What undo needs to restore the prompt of `frame`: its label map, or null when it has none. */
export async function promptBefore(frame) {
  const entry = await labelsOf(frame);
  return entry.source === "prompt" ? entry.labels : null;
}

/**
 * Records an edit made on the server (clicks, a loaded file) so that undo can take it back;
 * `priorClicks`, for an edit by clicks, the clicks and box before it.
 */
export function remember(frame, before, priorClicks = null) {
  undoStack.push({ frame, labels: before, clicks: priorClicks });
  if (!priorClicks) {
    // Not an edit by clicks (a stroke, a polygon, a loaded file, a deletion): the server has
    // forgotten the clicks of the frame, and the next click starts afresh from this mask.
    clicks = newClicks(-1, -1);
    drawDecoration();
  }
}

function sendClicks(priorClicks) {
  return serial(() => sendPendingClicks(priorClicks));
}

async function sendPendingClicks(priorClicks) {
  const { frame, object } = clicks;
  const before = await promptBefore(frame);
  const grown = await guarded(async () => {
    const body = { object, points: clicks.points, box: clicks.box, clear: clicks.clear };
    const reply = await sendJson("POST", `api/clicks/${frame}`, body);
    if (reply && reply.objects) store.objects = reply.objects;
    store.prompts.add(frame);
    forgetLabels(frame);
    emit("objects");
    emit("marks");
    emit("edited");
    clicks.clear = false;
    remember(frame, before, priorClicks);
    return true;
  });
  if (frame === store.frame) await showFrame();
  // Said once the mask is on screen (the frame's label map is fetched again first).
  if (grown) showStatus(`frame ${frame}: mask of object ${object} grown from the clicks`);
}

/**
 * The clicks on (`frame`, `object`), to add to. Starting on a new pair, it takes the clicks and
 * box the server holds for it (made before a reload or a restart), so that a click refines
 * that mask rather than growing one from itself alone.
 */
async function clicksFor(frame, object) {
  if (clicks.frame !== frame || clicks.object !== object) {
    clicks = newClicks(frame, object);
    const state = await getJson("api/state");
    const held = (state.clicks || []).find((c) => c.frame === frame && c.object === object);
    if (held && clicks.frame === frame && clicks.object === object) {
      // (A click made while the state was on its way is kept, after the held ones.)
      clicks.points = [...held.points.map((p) => [...p]), ...clicks.points];
      clicks.box = clicks.box || held.box;
      clicks.clear = false;
    }
  }
  return clicks;
}

/** Forgets the pending clicks, polygon and box (on a new frame, object or tool). */
export function resetPending() {
  polygon = [];
  dragBox = null;
  clicks = newClicks(-1, -1);
  drawDecoration();
}

function closePolygon() {
  if (polygon.length < 3) return;
  const points = polygon;
  polygon = [];
  const frame = store.frame;
  guarded(async () => {
    const object = await activeObject();
    const entry = await settledLabels(frame);
    const labels = copyLabels(entry.labels);
    fillPolygon(labels, points, object);
    renderOverlay(labels);
    await commit(frame, labels, entry.source === "prompt" ? entry.labels : null);
  });
  drawDecoration();
}

function onPointerDown(event) {
  if (!store.video) return;
  emit("interacted");
  const point = framePoint(event);
  const frame = store.frame;
  const negative = event.button === 2 || !tool.positive;
  if (tool.name === "brush" || tool.name === "eraser") {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    stroke = { frame, labels: null, before: null, last: point, pending: [point] };
    guarded(async () => {
      const object = await activeObject();
      const entry = await settledLabels(frame);
      if (!stroke || stroke.frame !== frame) return;
      stroke.object = object;
      stroke.before = entry.source === "prompt" ? entry.labels : null;
      stroke.labels = copyLabels(entry.labels);
      const queued = stroke.pending;
      stroke.pending = null;
      let last = queued[0];
      for (const p of queued) {
        paintStroke(last, p);
        last = p;
      }
      stroke.last = last;
      if (stroke.ended) endStroke();
      else renderOverlay(stroke.labels);
    });
  } else if (tool.name === "polygon") {
    if (event.button !== 0) return;
    if (polygon.length >= 3) {
      const [fx, fy] = polygon[0];
      if (Math.hypot(point[0] - fx, point[1] - fy) < 8 * pixelScale()) {
        closePolygon();
        return;
      }
    }
    polygon.push(point);
  } else if (tool.name === "box") {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    dragBox = { from: point, to: point };
  } else if (tool.name === "click") {
    guarded(async () => {
      const object = await activeObject();
      // The clicks before this one: those held since a reload or restart are taken first.
      const pending = await clicksFor(frame, object);
      const prior = clicksNow(frame, object);
      pending.points.push([Math.round(point[0]), Math.round(point[1]), negative ? 0 : 1]);
      drawDecoration();
      await sendClicks(prior);
    });
  }
  drawDecoration();
}

function paintStroke(from, to) {
  const radius = tool.size / 2;
  if (tool.name === "brush") {
    paintSegment(stroke.labels, from[0], from[1], to[0], to[1], radius, stroke.object);
  } else {
    paintSegment(stroke.labels, from[0], from[1], to[0], to[1], radius, 0, stroke.object);
  }
}

function onPointerMove(event) {
  if (!store.video) return;
  hover = framePoint(event);
  if (stroke) {
    if (stroke.pending) stroke.pending.push(hover);
    else {
      paintStroke(stroke.last, hover);
      // Only the pixels the segment touched, and their neighbours (whose edges may change).
      const { width, height } = stroke.labels;
      const rect = boundsOf([stroke.last, hover], tool.size / 2 + 2, width, height);
      stroke.last = hover;
      if (rect) renderOverlay(stroke.labels, rect);
    }
  }
  if (dragBox) dragBox.to = hover;
  drawDecoration();
}

function endStroke() {
  const { frame, labels, before } = stroke;
  stroke = null;
  commit(frame, labels, before);
}

function onPointerUp(event) {
  if (stroke) {
    if (stroke.pending) stroke.ended = true; // the label map is still loading
    else endStroke();
  }
  if (dragBox) {
    const [x0, y0] = dragBox.from;
    const [x1, y1] = framePoint(event);
    dragBox = null;
    if (Math.abs(x1 - x0) >= 2 && Math.abs(y1 - y0) >= 2) {
      const frame = store.frame;
      const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
      guarded(async () => {
        const object = await activeObject();
        const pending = await clicksFor(frame, object);
        const prior = clicksNow(frame, object);
        pending.box = box.map(Math.round);
        await sendClicks(prior);
        drawDecoration();
      });
    }
  }
  drawDecoration();
}

function drawDecoration() {
  const scale = pixelScale();
  setDecoration((ctx) => {
    ctx.save();
    ctx.lineWidth = 1.5 * scale;
    if (hover && (tool.name === "brush" || tool.name === "eraser")) {
      ctx.strokeStyle = tool.name === "brush" ? "#ffffff" : "#ff6060";
      ctx.beginPath();
      ctx.arc(hover[0], hover[1], tool.size / 2, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (polygon.length) {
      ctx.strokeStyle = "#ffe14d";
      ctx.beginPath();
      ctx.moveTo(...polygon[0]);
      for (const p of polygon.slice(1)) ctx.lineTo(...p);
      if (hover) ctx.lineTo(...hover);
      ctx.stroke();
      for (const [x, y] of polygon) ctx.fillRect(x - 2 * scale, y - 2 * scale, 4 * scale, 4 * scale);
    }
    const box = dragBox ? [...dragBox.from, ...dragBox.to] : clicks.frame === store.frame ? clicks.box : null;
    if (box) {
      ctx.strokeStyle = "#ffe14d";
      ctx.setLineDash([6 * scale, 4 * scale]);
      ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
      ctx.setLineDash([]);
    }
    if (clicks.frame === store.frame) {
      for (const [x, y, positive] of clicks.points) {
        ctx.fillStyle = positive ? "#39d353" : "#ff4d4d";
        ctx.strokeStyle = "#000000";
        ctx.beginPath();
        ctx.arc(x, y, 5 * scale, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
    }
    ctx.restore();
  });
}

export function setTool(name) {
  tool.name = name;
  polygon = [];
  dragBox = null;
  canvas.dataset.tool = name;
  drawDecoration();
}

export function setup() {
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointerleave", () => {
    hover = null;
    drawDecoration();
  });
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("dblclick", () => {
    if (tool.name === "polygon") closePolygon();
  });
  window.addEventListener("keydown", (event) => {
    if (tool.name !== "polygon" || event.target.closest("input, textarea")) return;
    if (event.key === "Enter") closePolygon();
    if (event.key === "Escape") {
      polygon = [];
      drawDecoration();
    }
  });
  draw();
}
