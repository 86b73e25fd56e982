// The page's state, shared by its panels, and the few events they tell each other about.
// The server owns the truth (objects, prompts, results); the store mirrors it and caches the
// label maps of the frames the user looked at.

import { getJson, getPng } from "./api.js";
import { decodeLabelPng, encodeLabelPng } from "./png.js";
import { emptyLabels } from "./labels.js";

export const store = {
  video: null, // {frames, width, height, fps, names}
  frame: 0,
  objects: [], // [{id, name, color, hidden}]
  active: null, // id of the object the tools draw
  prompts: new Set(), // frames that hold a prompt
  results: new Set(), // frames that hold a result mask
  settings: {},
  opacity: 0.55,
  labels: new Map(), // frame -> {labels, source: "prompt" | "result" | "none"}
};

const listeners = new Map();

/** Calls `handler(detail)` whenever `emit(name, detail)` happens. */
export function on(name, handler) {
  if (!listeners.has(name)) listeners.set(name, []);
  listeners.get(name).push(handler);
}

export function emit(name, detail = undefined) {
  for (const handler of listeners.get(name) || []) handler(detail);
}

/** Reads objects, prompt and result frames and the job from the server. */
export async function refreshState() {
  const state = await getJson("api/state");
  store.objects = state.objects;
  store.prompts = new Set(state.prompts);
  store.results = new Set(state.results);
  store.settings = state.settings || {};
  store.model = store.settings.model || ""; // the backbone, for the note on click quality
  if (!store.objects.some((object) => object.id === store.active)) {
    store.active = store.objects.length ? store.objects[0].id : null;
  }
  emit("objects");
  emit("marks");
  return state;
}

export function hiddenIds() {
  return new Set(store.objects.filter((object) => object.hidden).map((object) => object.id));
}

/**
 * The label map shown on `frame`: its prompt if it has one, else its result mask, else an empty
 * map. Cached until `forgetLabels`.
 */
export async function labelsOf(frame) {
  const cached = store.labels.get(frame);
  if (cached) return cached;
  let entry = { labels: emptyLabels(store.video.width, store.video.height), source: "none" };
  for (const source of ["prompt", "result"]) {
    const has = source === "prompt" ? store.prompts.has(frame) : store.results.has(frame);
    if (!has) continue;
    const bytes = await getPng(source === "prompt" ? `api/prompts/${frame}` : `api/masks/${frame}`);
    if (bytes) {
      entry = { labels: await decodeLabelPng(bytes), source };
      break;
    }
  }
  store.labels.set(frame, entry);
  return entry;
}

/** Drops cached label maps: of one frame, or of all frames when `frame` is omitted. */
export function forgetLabels(frame = undefined) {
  if (frame === undefined) store.labels.clear();
  else store.labels.delete(frame);
}

export function labelsToPng(labels) {
  return encodeLabelPng(labels.ids, labels.width, labels.height);
}
