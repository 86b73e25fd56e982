// The object list: create, select, rename, show/hide and delete objects (ids and colours of the
// DAVIS palette, given by the server).

import { request, sendJson } from "./api.js";
import { guarded } from "./notify.js";
import { emit, forgetLabels, on, refreshState, store } from "./store.js";

const list = document.getElementById("objects");

function row(object) {
  const item = document.createElement("li");
  item.className = "object" + (object.id === store.active ? " active" : "");
  item.dataset.id = object.id;
  item.title = "click to draw this object";

  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = object.color;
  const id = document.createElement("span");
  id.className = "object-id";
  id.textContent = object.id;

  const name = document.createElement("input");
  name.className = "object-name";
  name.value = object.name;
  name.setAttribute("aria-label", `name of object ${object.id}`);
  // Enter (or Escape) ends the renaming: the keys go back to the page's shortcuts.
  name.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === "Escape") name.blur();
  });
  name.addEventListener("change", () =>
    guarded(async () => {
      const updated = await sendJson("PATCH", `api/objects/${object.id}`, { name: name.value });
      if (updated && updated.name !== undefined) object.name = updated.name;
      else object.name = name.value;
    }),
  );

  const eye = document.createElement("button");
  eye.className = "object-hide";
  eye.textContent = object.hidden ? "show" : "hide";
  eye.title = object.hidden ? "show this object's mask" : "hide this object's mask";
  eye.addEventListener("click", (event) => {
    event.stopPropagation();
    guarded(async () => {
      await sendJson("PATCH", `api/objects/${object.id}`, { hidden: !object.hidden });
      object.hidden = !object.hidden;
      emit("objects");
      emit("repaint");
    });
  });

  const remove = document.createElement("button");
  remove.className = "object-delete";
  remove.textContent = "delete";
  remove.title = "delete this object from every prompt";
  remove.addEventListener("click", (event) => {
    event.stopPropagation();
    // Deleting removes the object from every prompt (no undo): a second click confirms.
    if (!remove.classList.contains("confirm")) {
      remove.classList.add("confirm");
      remove.textContent = "sure?";
      setTimeout(() => {
        remove.classList.remove("confirm");
        remove.textContent = "delete";
      }, 3000);
      return;
    }
    guarded(async () => {
      await request("DELETE", `api/objects/${object.id}`);
      emit("edited");
      forgetLabels();
      await refreshState();
      emit("repaint");
    });
  });

  item.append(swatch, id, name, eye, remove);
  item.addEventListener("click", () => select(object.id));
  if (object.hidden) item.classList.add("hidden-object");
  return item;
}

export function select(id) {
  if (store.active === id) return;
  store.active = id;
  for (const item of list.querySelectorAll(".object")) {
    item.classList.toggle("active", Number(item.dataset.id) === id);
  }
  emit("active");
}

function render() {
  list.replaceChildren(...store.objects.map(row));
  if (!store.objects.length) {
    const hint = document.createElement("li");
    hint.className = "hint";
    hint.textContent = "No objects yet: add one, or just start drawing.";
    list.append(hint);
  }
}

export async function addObject() {
  await guarded(async () => {
    const object = await sendJson("POST", "api/objects", {});
    store.objects.push(object);
    store.active = object.id;
    emit("objects");
    emit("active");
  });
}

export function setup() {
  document.getElementById("add-object").addEventListener("click", addObject);
  on("objects", render);
  render();
}
