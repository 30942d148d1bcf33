// The sidecar's JSON API, with this tab's token (kept in sessionStorage) when it has one.

export const TOKEN_KEY = "agents-watchdog-token";

export class NeedsToken extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const secret = token();
  if (secret) headers.Authorization = "Bearer " + secret;
  const response = await fetch(path, Object.assign({ cache: "no-store" }, options, { headers }));
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  const why = body && body.detail ? body.detail : response.statusText;
  if (response.status === 401) throw new NeedsToken(why);
  if (!response.ok) throw new ApiError(response.status, why);
  return body;
}
