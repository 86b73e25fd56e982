// The studio's HTTP API as the page uses it. Every request carries the session token: the
// X-Dinotrack-Token header on fetch, the ?token= query where a header cannot be set (<img>,
// EventSource). The token comes from the page's own URL, as the server printed it.

export const token = new URLSearchParams(window.location.search).get("token") || "";

/** A URL of the API with the token in its query (for <img src> and EventSource). */
export function tokenUrl(path, params = {}) {
  const query = new URLSearchParams({ ...params, token });
  return `${path}?${query}`;
}

/** An error the server answered with: `status` and its one-line `message`. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let line = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) line = body.error;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, line);
}

/**
 * fetch() with the token header. `body` may be a plain object (sent as JSON), a Blob or
 * ArrayBuffer (sent as is). Resolves to the Response when it is ok, else throws ApiError.
 */
export async function request(method, path, body = undefined) {
  const headers = { "X-Dinotrack-Token": token };
  let payload = body;
  if (body !== undefined && !(body instanceof Blob) && !(body instanceof ArrayBuffer)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  } else if (body !== undefined) {
    headers["Content-Type"] = "image/png";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `the studio server does not answer (${error.message}); is it still running?`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path) {
  return (await request("GET", path)).json();
}

export async function sendJson(method, path, body) {
  const response = await request(method, path, body);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The bytes of a PNG the API serves, or null when it answers 404 (none yet). */
export async function getPng(path) {
  try {
    const response = await request("GET", path);
    return new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}
