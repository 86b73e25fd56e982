// The studio page: loads the video and the saved work, then wires the panels together.

import { ApiError, getJson, request, sendJson, token } from "./api.js";
import * as jobs from "./jobs.js";
import { guarded, showError, showStatus } from "./notify.js";
import * as objects from "./objects.js";
import { emit, forgetLabels, on, refreshState, store } from "./store.js";
import * as timeline from "./timeline.js";
import * as tools from "./tools.js";
import * as view from "./view.js";

function setupToolPanel() {
  const buttons = [...document.querySelectorAll("[data-tool]")];
  const choose = (name) => {
    tools.setTool(name);
    for (const button of buttons) button.setAttribute("aria-pressed", button.dataset.tool === name);
    document.getElementById("size-row").hidden = !(name === "brush" || name === "eraser");
    document.getElementById("polarity-row").hidden = name !== "click";
    document.getElementById("tool-hint").textContent = buttons
      .find((button) => button.dataset.tool === name)
      .dataset.hint;
  };
  for (const button of buttons) button.addEventListener("click", () => choose(button.dataset.tool));
  const keys = { b: "brush", e: "eraser", p: "polygon", x: "box", c: "click" };
  window.addEventListener("keydown", (event) => {
    if (event.target.closest("input:not([type=range]), textarea")) return; // typing a name
    if (event.ctrlKey || event.metaKey) {
      if (event.key === "z") {
        event.preventDefault();
        tools.undo();
      }
      return;
    }
    if (keys[event.key]) choose(keys[event.key]);
    if (event.key === "0") view.resetZoom();
    if (event.key === "[" || event.key === "]") {
      const size = document.getElementById("brush-size");
      size.value = Number(size.value) + (event.key === "]" ? 4 : -4);
      size.dispatchEvent(new Event("input"));
    }
  });
  const size = document.getElementById("brush-size");
  const sizeText = document.getElementById("brush-size-value");
  size.addEventListener("input", () => {
    tools.tool.size = Number(size.value);
    sizeText.textContent = `${size.value} px`;
  });
  size.dispatchEvent(new Event("input"));
  const polarity = document.getElementById("polarity");
  polarity.addEventListener("click", () => {
    tools.tool.positive = !tools.tool.positive;
    polarity.textContent = tools.tool.positive ? "left click: positive" : "left click: negative";
    polarity.setAttribute("aria-pressed", !tools.tool.positive);
  });
  document.getElementById("undo").addEventListener("click", () => tools.undo());
  document.getElementById("clear-prompt").addEventListener("click", () => tools.clearPrompt());
  const file = document.getElementById("mask-file");
  file.addEventListener("change", async () => {
    const chosen = file.files[0];
    file.value = "";
    if (!chosen) return;
    const frame = store.frame;
    await tools.serial(() => loadMask(frame, chosen));
  });
  choose("brush");
}

/** Makes a mask file the prompt of `frame`, read by the server as `--mask` reads it. */
async function loadMask(frame, chosen) {
  const before = await tools.promptBefore(frame);
  let warned = [];
  const saved = await guarded(async () => {
    const reply = await request("PUT", `api/prompts/${frame}`, chosen);
    const body = await reply.json().catch(() => ({}));
    if (body.objects) store.objects = body.objects;
    warned = body.warnings || [];
    return true;
  });
  if (saved) {
    tools.remember(frame, before);
    emit("edited");
    forgetLabels(frame);
    await refreshState();
    showStatus(`frame ${frame}: ${chosen.name} loaded as its prompt`);
    // As the command line prints them: a resized mask may belong to another video.
    if (warned.length) showError(`warning: ${chosen.name}: ${warned.join("; ")}`);
    emit("repaint");
  }
}

function setupViewPanel() {
  const opacity = document.getElementById("opacity");
  if (typeof store.settings.opacity === "number") store.opacity = store.settings.opacity;
  opacity.value = Math.round(store.opacity * 100);
  opacity.addEventListener("input", () => {
    store.opacity = Number(opacity.value) / 100;
    view.renderOverlay();
  });
  // Saved with the project, so that a reload or a new session shows the masks the same way.
  opacity.addEventListener("change", () =>
    guarded(() => sendJson("PUT", "api/settings", { opacity: store.opacity })),
  );
}

function describeModel() {
  const model = store.model;
  const offline = /^(dinotrack_|test_)/.test(model);
  // Folded under the backbone's name, so that the panels below stay in view.
  document.getElementById("model-summary").textContent =
    (model ? `Backbone: ${model}` : "Backbone") + (offline ? " (clicks are rough)" : "");
  document.getElementById("model-note").textContent =
    "Box and clicks grow a mask from patch-feature similarity. " +
    (offline
      ? "With this small offline backbone they are rough (a box plus one click inside: mean " +
        "IoU 0.55 on the DAVIS dev first frames with the shipped dinotrack_vitt16_v3, random weights 0.45): take them as a start " +
        "and finish with the brush, eraser or polygon, which are exact. "
      : "") +
    "Official DINO weights (e.g. dino_vits8) should do much better; a click-trained model " +
    "such as SAM better still.";
}

async function main() {
  try {
    store.video = await getJson("api/video");
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      const line = "open the page with the URL that `dinotrack studio` printed (with ?token=...)";
      showError(new Error(token ? `Access refused: ${line}` : `No token: ${line}`));
    } else {
      showError(error);
    }
    return;
  }
  const { frames, width, height, fps } = store.video;
  const rate = Number(Number(fps).toFixed(2)); // 29.97, not 29.97002997002997
  document.getElementById("video-info").textContent = `${frames} frames, ${width}x${height}, ${rate} fps`;
  const state = await refreshState();
  view.setup();
  tools.setup();
  objects.setup();
  timeline.setup();
  setupToolPanel();
  setupViewPanel();
  describeModel();
  jobs.setup(state.job, state.up_to_date);
  // What the server said when it opened the project (kept masks it does not show, and why).
  if (state.notices && state.notices.length) showError(state.notices.join(" "));
  on("frame", () => {
    tools.resetPending();
    view.showFrame();
  });
  on("active", () => tools.resetPending());
  on("repaint", () => view.showFrame());
  on("objects", () => view.renderOverlay());
  await view.showFrame();
  document.body.dataset.ready = "1";
}

main().catch(showError);
