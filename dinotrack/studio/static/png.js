// Label maps <-> PNG bytes. A label map is a Uint8Array of object ids (0 = background), one per
// pixel in row order. The page sends palette PNGs whose index is the object id (DAVIS style) and
// reads the palette PNGs the server sends, without going through a canvas, so that no colour
// management or smoothing can change an id.

/** The DAVIS / PASCAL VOC palette entry of `id` as [r, g, b] (the same as dinotrack's). */
export function davisColour(id) {
  const rgb = [0, 0, 0];
  for (let level = 0; level < 8; level += 1) {
    const bits = id >> (3 * level);
    for (let channel = 0; channel < 3; channel += 1) {
      rgb[channel] |= ((bits >> channel) & 1) << (7 - level);
    }
  }
  return rgb;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function zlib(bytes, mode) {
  const stream = new Blob([bytes]).stream().pipeThrough(
    mode === "compress" ? new CompressionStream("deflate") : new DecompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i += 1) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** A palette PNG (Blob) of a `width` x `height` label map, with the DAVIS palette. */
export async function encodeLabelPng(ids, width, height) {
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 3, 0, 0, 0], 8); // 8 bits, palette colour, deflate, no filter method, no interlace
  const palette = new Uint8Array(256 * 3);
  for (let id = 0; id < 256; id += 1) palette.set(davisColour(id), 3 * id);
  const rows = new Uint8Array((width + 1) * height); // filter byte 0 (none) before each row
  for (let y = 0; y < height; y += 1) {
    rows.set(ids.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  }
  const parts = [
    new Uint8Array(SIGNATURE),
    chunk("IHDR", header),
    chunk("PLTE", palette),
    chunk("IDAT", await zlib(rows, "compress")),
    chunk("IEND", new Uint8Array(0)),
  ];
  return new Blob(parts, { type: "image/png" });
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

/**
 * The label map of an 8-bit palette or grayscale PNG (what the server writes for prompts and
 * results): {width, height, ids}. Other PNG kinds throw: the server never sends them.
 */
export async function decodeLabelPng(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (SIGNATURE.some((value, i) => bytes[i] !== value)) throw new Error("not a PNG");
  let width = 0;
  let height = 0;
  const idat = [];
  for (let at = 8; at < bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const [depth, colourType, , , interlace] = data.subarray(8, 13);
      if (depth !== 8 || (colourType !== 3 && colourType !== 0) || interlace !== 0) {
        throw new Error(`unexpected PNG: depth ${depth}, colour type ${colourType}`);
      }
    } else if (type === "IDAT") {
      idat.push(data);
    }
    at += 12 + length;
  }
  const raw = await zlib(new Blob(idat), "decompress");
  const ids = new Uint8Array(width * height);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (width + 1)];
    const source = raw.subarray(y * (width + 1) + 1, (y + 1) * (width + 1));
    const row = ids.subarray(y * width, (y + 1) * width);
    const above = y > 0 ? ids.subarray((y - 1) * width, y * width) : new Uint8Array(width);
    for (let x = 0; x < width; x += 1) {
      const left = x > 0 ? row[x - 1] : 0;
      const up = above[x];
      const upLeft = x > 0 ? above[x - 1] : 0;
      const predictor = [0, left, up, (left + up) >> 1, paeth(left, up, upLeft)][filter];
      row[x] = (source[x] + predictor) & 0xff;
    }
  }
  return { width, height, ids };
}
