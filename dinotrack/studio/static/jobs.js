// Propagation (start, progress bar, cancel; masks appear as the server computes them, through
// server-sent events, or by polling when those fail) and export.

import { getJson, sendJson, tokenUrl } from "./api.js";
import { guarded, showError, showStatus } from "./notify.js";
import { emit, forgetLabels, on, refreshState, store } from "./store.js";

const bar = document.getElementById("progress");
const progressText = document.getElementById("progress-text");
const follow = document.getElementById("follow");
const cancelButton = document.getElementById("cancel");
const staleNote = document.getElementById("stale-note");
const directionButtons = [...document.querySelectorAll("[data-direction]")];
let events = null;
let pollTimer = null;
let watchTimer = null; // checks that the server is still there once its event stream has ended
let lastState = "idle";
let resultsVersion;
let userMoved = false; // whether the user moved or drew since the last job started
let editedDuringJob = false; // a job computes from the prompts as they were when it started

function showProgress(job) {
  const running = job.state === "running";
  bar.max = Math.max(1, job.total || 0);
  bar.value = job.done || 0;
  cancelButton.disabled = !running;
  for (const button of directionButtons) button.disabled = running;
  const what = job.direction ? `${job.direction}: ` : "";
  const texts = {
    // No job yet in this server's life: the masks shown were kept from an earlier session.
    idle: store.results.size ? `idle: ${store.results.size} frames kept from the last session` : "idle",
    running: `${what}${job.done} / ${job.total} frames`,
    done: job.reused
      ? `${what}done, ${job.done} frames (${job.computed} tracked, ${job.reused} unchanged since the last run)`
      : `${what}done, ${job.done} frames`,
    cancelled: `${what}cancelled after ${job.done} of ${job.total} frames`,
    failed: `${what}failed`,
  };
  progressText.textContent = texts[job.state] || job.state;
  document.body.dataset.job = job.state;
}

/**
 * A frame's mask was computed (an event): mark it, show it if it is on screen, and move the
 * view to it while following (events may come in after a poll saw the job end: the view
 * still follows them, unless the user has moved since the job started).
 */
function onFrame(frame) {
  store.results.add(frame);
  forgetLabels(frame);
  emit("marks");
  if (follow.checked && !userMoved && frame !== store.frame) {
    store.frame = frame;
    emit("frame");
  } else if (frame === store.frame && !store.prompts.has(frame)) {
    emit("repaint");
  }
}

/**
 * Whether a report is older than one already seen: events and polls race, and the last frame's
 * event may arrive after a poll that saw the job end. `results_version` only grows.
 */
function isStale(job) {
  if (job.results_version === undefined || resultsVersion === undefined) return false;
  if (job.results_version !== resultsVersion) return job.results_version < resultsVersion;
  return job.state === "running" && lastState !== "running";
}

/** One progress report (an event or a poll): update the bar; at the end, read the results. */
async function onProgress(job) {
  const stale = isStale(job);
  if (job.frame !== undefined && job.frame !== null) onFrame(job.frame); // new even when late
  if (stale) return;
  showProgress(job);
  const ended = job.state !== "running" && lastState === "running";
  const newResults = job.results_version !== undefined && job.results_version !== resultsVersion;
  lastState = job.state;
  resultsVersion = job.results_version;
  if (ended) {
    stopPolling();
    if (job.state === "failed" && job.error) showError(new Error(job.error));
    if (job.state === "done") {
      showStatus("propagation done");
      staleNote.hidden = !editedDuringJob;
    } else if (store.results.size) {
      staleNote.hidden = false; // cancelled or failed: some frames are missing
    }
  }
  if (ended || (newResults && !events)) {
    // Without events, the masks computed since the last poll are only known from the state.
    forgetLabels();
    await refreshState();
    emit("repaint");
  }
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}

/** Polls the progress while a job runs: the bar, and the end of the job even if events fail. */
function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(async () => {
    try {
      await onProgress(await getJson("api/progress"));
    } catch (error) {
      stopPolling();
      if (!serverGone(error)) showError(error);
    }
  }, 500);
}

/**
 * When `error` says the server stopped (no answer) or was restarted (a new token: 403), says so
 * and frees the job buttons, whose job died with the server; returns whether it did.
 */
function serverGone(error) {
  if (!error || (error.status !== 0 && error.status !== 403)) return false;
  stopPolling();
  clearInterval(watchTimer);
  watchTimer = null;
  lastState = "idle";
  showProgress({ state: "idle" });
  progressText.textContent = "the studio server stopped";
  showError(
    error.status === 403
      ? new Error("this studio was restarted: open the URL that `dinotrack studio` printed")
      : error,
  );
  return true;
}

function listen() {
  events = new EventSource(tokenUrl("api/events"));
  events.onmessage = (message) => onProgress(JSON.parse(message.data));
  events.onerror = () => {
    // The stream ended (the server stopped, or a proxy cut it): polling alone goes on, and a
    // check every few seconds tells an idle page that the server has gone.
    events.close();
    events = null;
    watchTimer = setInterval(async () => {
      try {
        await getJson("api/progress");
      } catch (error) {
        serverGone(error);
      }
    }, 3000);
  };
}

async function propagate(direction) {
  document.body.dataset.job = "running";
  const started = await guarded(async () => {
    const reply = await sendJson("POST", "api/propagate", { direction });
    lastState = "running";
    editedDuringJob = false;
    staleNote.hidden = true; // the propagation it asks for is under way
    userMoved = false;
    showProgress({ state: "running", done: 0, total: 0, direction, ...(reply && reply.job) });
    startPolling();
    return true;
  });
  if (!started) document.body.dataset.job = lastState;
}

async function exportResults() {
  const formats = [...document.querySelectorAll("[name=format]:checked")].map((box) => box.value);
  const list = document.getElementById("written");
  if (!formats.length) {
    showError(new Error("choose at least one export format"));
    return;
  }
  list.replaceChildren();
  const button = document.getElementById("export");
  button.disabled = true;
  showStatus("exporting...", true);
  const reply = await guarded(() => sendJson("POST", "api/export", { formats }));
  button.disabled = false;
  if (!reply) {
    showStatus("export failed");
    return;
  }
  const written = reply.written || [];
  const items = written.length ? summarise(written) : ["nothing written"];
  list.replaceChildren(
    ...items.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }),
  );
  const out = reply.out || store.settings.out;
  document.getElementById("export-out").textContent = out ? `written in ${out}:` : "written in --out:";
  showStatus(`exported ${formats.join(", ")}`);
}

/** The written files, one line per folder of masks ("results/00000.png ... (50 masks)"). */
function summarise(paths) {
  const folders = new Map(); // folder -> its mask PNGs
  const lines = [];
  for (const path of paths) {
    const folder = path.slice(0, path.lastIndexOf("/") + 1);
    if (!path.endsWith(".png")) lines.push(path);
    else if (folders.has(folder)) folders.get(folder).push(path);
    else folders.set(folder, [path]);
  }
  const masks = [...folders.values()].map((pngs) =>
    pngs.length > 3 ? `${pngs[0]} ... ${pngs[pngs.length - 1]} (${pngs.length} masks)` : pngs.join(", "),
  );
  return masks.concat(lines);
}

/**
 * @param job The job's progress from the state.
 * @param upToDate Whether the results (perhaps kept from an earlier session) were computed
 *   from the current prompts.
 */
export function setup(job, upToDate) {
  for (const button of directionButtons) {
    button.addEventListener("click", () => propagate(button.dataset.direction));
  }
  cancelButton.addEventListener("click", () =>
    guarded(async () => {
      await sendJson("POST", "api/cancel", {});
      showStatus("cancelling...");
    }),
  );
  document.getElementById("export").addEventListener("click", exportResults);
  // The export formats are kept with the project's settings, like the opacity.
  const formatBoxes = [...document.querySelectorAll("[name=format]")];
  const saved = store.settings.export_formats;
  if (Array.isArray(saved)) for (const box of formatBoxes) box.checked = saved.includes(box.value);
  for (const box of formatBoxes) {
    box.addEventListener("change", () => {
      const formats = formatBoxes.filter((b) => b.checked).map((b) => b.value);
      guarded(() => sendJson("PUT", "api/settings", { export_formats: formats }));
    });
  }
  // The user moved or drew since the job started: stop pulling the view along.
  on("interacted", () => {
    userMoved = true;
  });
  // The masks were computed from other prompts: say so (export refuses them until then). The
  // server decides, so that an edit undone back to the tracked prompts clears the note.
  let asked = 0;
  on("edited", async () => {
    if (lastState === "running") editedDuringJob = true;
    else if (store.results.size) {
      const question = ++asked;
      const state = await getJson("api/state").catch(() => null);
      if (state && question === asked && lastState !== "running") staleNote.hidden = state.up_to_date;
    }
  });
  listen();
  if (job) {
    lastState = job.state;
    showProgress(job);
    resultsVersion = job.results_version;
    if (job.state === "running") startPolling();
    else if (store.results.size) staleNote.hidden = upToDate;
  }
}
