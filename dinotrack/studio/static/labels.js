// Editing and drawing label maps: {width, height, ids: Uint8Array}, ids in row order, 0 =
// background. Painting works on ids directly (no canvas anti-aliasing), so a stroke writes
// exactly one object id per pixel and never a blend of two.

import { davisColour } from "./png.js";

export function emptyLabels(width, height) {
  return { width, height, ids: new Uint8Array(width * height) };
}

export function copyLabels(labels) {
  return { width: labels.width, height: labels.height, ids: labels.ids.slice() };
}

/**
 * Paints a disc of radius `radius` (pixels) centred on (cx, cy). Brush: `id` > 0 sets the
 * pixels to `id`. Eraser: `id` = 0 with `only` set clears the pixels of object `only`.
 */
export function paintDisc(labels, cx, cy, radius, id, only = null) {
  const { width, height, ids } = labels;
  const r2 = radius * radius;
  const y0 = Math.max(0, Math.floor(cy - radius));
  const y1 = Math.min(height - 1, Math.ceil(cy + radius));
  const x0 = Math.max(0, Math.floor(cx - radius));
  const x1 = Math.min(width - 1, Math.ceil(cx + radius));
  for (let y = y0; y <= y1; y += 1) {
    for (let x = x0; x <= x1; x += 1) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      if (dx * dx + dy * dy > r2) continue;
      const at = y * width + x;
      if (only === null || ids[at] === only) ids[at] = id;
    }
  }
}

/** Paints discs along the segment from (x0, y0) to (x1, y1), as a brush dragged over it. */
export function paintSegment(labels, x0, y0, x1, y1, radius, id, only = null) {
  const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / Math.max(1, radius / 2)));
  for (let s = 0; s <= steps; s += 1) {
    const t = s / steps;
    paintDisc(labels, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, radius, id, only);
  }
}

/** Fills the polygon `points` ([[x, y], ...]) with `id`: the pixels whose centre is inside. */
export function fillPolygon(labels, points, id) {
  const { width, height, ids } = labels;
  for (let y = 0; y < height; y += 1) {
    const yc = y + 0.5;
    const crossings = [];
    for (let i = 0; i < points.length; i += 1) {
      const [xa, ya] = points[i];
      const [xb, yb] = points[(i + 1) % points.length];
      if (ya <= yc !== yb <= yc) crossings.push(xa + ((yc - ya) / (yb - ya)) * (xb - xa));
    }
    crossings.sort((a, b) => a - b);
    for (let k = 0; k + 1 < crossings.length; k += 2) {
      const from = Math.max(0, Math.ceil(crossings[k] - 0.5));
      const to = Math.min(width - 1, Math.floor(crossings[k + 1] - 0.5));
      ids.fill(id, y * width + from, y * width + to + 1);
    }
  }
}

/** The ids present in a label map, background excluded, in increasing order. */
export function presentIds(labels) {
  const seen = new Uint8Array(256);
  for (const id of labels.ids) seen[id] = 1;
  const out = [];
  for (let id = 1; id < 256; id += 1) if (seen[id]) out.push(id);
  return out;
}

/**
 * The overlay of a label map as ImageData: each shown object in its palette colour with alpha
 * `opacity` (0..1) inside, fully opaque on its boundary; hidden objects and background clear.
 * `rect` ({x, y, width, height}, default: all) limits it to a part of the map, to redraw only
 * what a brush stroke touched.
 */
export function overlayImage(labels, hidden, opacity, rect = null) {
  const { width, height, ids } = labels;
  const area = rect || { x: 0, y: 0, width, height };
  const image = new ImageData(area.width, area.height);
  const rgba = image.data;
  const colours = [];
  for (let id = 0; id < 256; id += 1) colours.push(davisColour(id));
  const fill = Math.round(255 * opacity);
  for (let y = area.y; y < area.y + area.height; y += 1) {
    for (let x = area.x; x < area.x + area.width; x += 1) {
      const at = y * width + x;
      const id = ids[at];
      if (id === 0 || hidden.has(id)) continue;
      const edge =
        (x > 0 && ids[at - 1] !== id) ||
        (x < width - 1 && ids[at + 1] !== id) ||
        (y > 0 && ids[at - width] !== id) ||
        (y < height - 1 && ids[at + width] !== id);
      const [r, g, b] = colours[id];
      const out = 4 * ((y - area.y) * area.width + (x - area.x));
      rgba[out] = r;
      rgba[out + 1] = g;
      rgba[out + 2] = b;
      rgba[out + 3] = edge ? 255 : fill;
    }
  }
  return image;
}

/** The part of a `width` x `height` map within `margin` pixels of the points, or null if none. */
export function boundsOf(points, margin, width, height) {
  if (!points.length) return null;
  const xs = points.map(([x]) => x);
  const ys = points.map(([, y]) => y);
  const x0 = Math.max(0, Math.floor(Math.min(...xs) - margin));
  const y0 = Math.max(0, Math.floor(Math.min(...ys) - margin));
  const x1 = Math.min(width, Math.ceil(Math.max(...xs) + margin));
  const y1 = Math.min(height, Math.ceil(Math.max(...ys) + margin));
  if (x1 <= x0 || y1 <= y0) return null;
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}
