// Shared by the pages: the token (kept in this browser's localStorage) and API calls.
"use strict";

const TOKEN_KEY = "deadnet-annotate-token";

function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + getToken() } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data.error || r.statusText);
  return data;
}

async function fetchBlobUrl(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + getToken() } });
  if (!r.ok) throw new ApiError(r.status, "cannot load " + path);
  return URL.createObjectURL(await r.blob());
}
