// hearth API test UI: plain JS, no dependencies. Keeps the session token and
// the API key in sessionStorage so a reload keeps them (a tab only).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  token: sessionStorage.getItem("hearth.token") || "",
  key: sessionStorage.getItem("hearth.key") || "",
};

function show() {
  $("#token").textContent = state.token ? state.token.slice(0, 24) + "…" : "none";
  $("#apikey").textContent = state.key || "none";
}

// call sends a request and prints the answer. auth: "bearer" | "key" | "".
async function call(method, path, body, auth) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth === "bearer" && state.token) headers["Authorization"] = "Bearer " + state.token;
  if (auth === "key") {
    if (state.key) headers["X-API-Key"] = state.key;
    else if (state.token) headers["Authorization"] = "Bearer " + state.token;
  }
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  const st = $("#status");
  st.textContent = `${method} ${path} → ${res.status}`;
  st.className = res.ok ? "state" : "state err";
  $("#out").textContent = typeof data === "string" ? data : JSON.stringify(data, null, 2);
  return { ok: res.ok, status: res.status, data };
}

function formValues(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) if (v !== "") out[k] = v;
  return out;
}

$("#auth").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const action = ev.submitter ? ev.submitter.dataset.action : "login";
  const { email, password } = formValues(ev.target);
  const r = await call("POST", "/v1/auth/" + action, { email, password }, "");
  if (r.ok && r.data.token) {
    state.token = r.data.token;
    sessionStorage.setItem("hearth.token", state.token);
    show();
  }
});
$("#me").addEventListener("click", () => call("GET", "/v1/me", undefined, "bearer"));

$("#key").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await call("POST", "/v1/api-keys", { name: formValues(ev.target).name }, "bearer");
  if (r.ok && r.data.key) {
    state.key = r.data.key;
    sessionStorage.setItem("hearth.key", state.key);
    show();
  }
});
$("#keys").addEventListener("click", () => call("GET", "/v1/api-keys", undefined, "bearer"));

$("#create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const v = formValues(ev.target);
  const body = { template: v.template };
  for (const k of ["vcpus", "memory_mb", "disk_size_mb", "timeout_s"]) if (v[k]) body[k] = Number(v[k]);
  const r = await call("POST", "/v1/sandboxes", body, "key");
  if (r.ok && r.data.id) $("#exec [name=id]").value = r.data.id;
});
$("#list").addEventListener("click", () => call("GET", "/v1/sandboxes", undefined, "key"));
$("#templates").addEventListener("click", () => call("GET", "/v1/templates", undefined, "key"));

const sandboxID = () => encodeURIComponent($("#exec [name=id]").value.trim());
$("#exec").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = formValues(ev.target);
  const args = (v.args || "").split(/\s+/).filter(Boolean);
  call("POST", `/v1/sandboxes/${sandboxID()}/exec`, { cmd: v.cmd, args }, "key");
});
$("#pause").addEventListener("click", () => call("POST", `/v1/sandboxes/${sandboxID()}/pause`, undefined, "key"));
$("#resume").addEventListener("click", () => call("POST", `/v1/sandboxes/${sandboxID()}/resume`, undefined, "key"));
$("#destroy").addEventListener("click", () => call("DELETE", `/v1/sandboxes/${sandboxID()}`, undefined, "key"));

show();
