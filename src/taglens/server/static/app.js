// taglens web page: search the library, inspect an image, drop an image to search by it or analyse it.
// Plain JavaScript, no libraries, no requests anywhere but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "taglens-api-key";
const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  urls: new Map(),      // container element -> object URLs to revoke when it is redrawn
  dropped: null,        // the File dropped or chosen
  retry: null,          // what to run again once an API key is given
  revealed: new Set(),  // ids of NSFW images the user chose to see
  hasLibrary: true,
};

class ApiError extends Error {
  constructor(status, message, body = {}) { super(message); this.status = status; this.body = body; }
}

// ---- talking to the server -----------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("key-panel").hidden = false;
    $("api-key").focus();
    throw new ApiError(401, "this server needs its API key");
  }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, detailText(body, response), body);
  return body;
}

function detailText(body, response) {
  if (typeof body.detail === "string") {
    const reasons = (body.results || []).filter((r) => r.error).map((r) => `${r.path}: ${r.error}`);
    return reasons.length ? `${body.detail} (${reasons.join("; ")})` : body.detail;
  }
  if (Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
  }
  const retry = response.headers.get("Retry-After");
  return `${response.status} ${response.statusText}` + (retry ? ` (retry in ${retry} s)` : "");
}

async function blobUrl(path, owner) {
  const response = await api(path);
  if (!response.ok) throw new ApiError(response.status, `image ${path}: ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  if (!state.urls.has(owner)) state.urls.set(owner, []);
  state.urls.get(owner).push(url);
  return url;
}

function releaseUrls(owner) {
  for (const url of state.urls.get(owner) || []) URL.revokeObjectURL(url);
  state.urls.delete(owner);
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) status("Enter the API key to go on.", true);
  else if (error instanceof ApiError && error.body.unknown_tags) unknownTags(error.body.unknown_tags, error.message);
  else status(error.message || String(error), true);
}

// The tag filters the library's tagger does not know: their boxes are marked, the status names them.
function unknownTags(names, detail) {
  const unknown = new Set(names);
  $("filters").open = true;  // the marked box is in view
  for (const id of ["tags", "no-tags"]) {
    const input = $(id);
    const bad = splitList(input.value).some((t) => unknown.has(t));
    input.classList.toggle("invalid", bad);
    if (bad) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  const quoted = names.map((n) => `“${n}”`).join(", ");
  const close = detail.match(/\(did you mean [^)]*\)/g) || [];
  status(`Unknown tag${names.length === 1 ? "" : "s"} ${quoted}` + (close.length ? " " + close.join(" ") : "")
    + ": check the spelling (spaces or underscores, any case).", true);
}

function clearTagMarks() {
  for (const id of ["tags", "no-tags"]) {
    $(id).classList.remove("invalid");
    $(id).removeAttribute("aria-invalid");
  }
}

// ---- small DOM helpers ----------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

const basename = (path) => path.split(/[\\/]/).pop();
const splitList = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
const fixed = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));

function scoreList(list, items) {
  list.replaceChildren();
  for (const { name, score, flagged } of items) {
    const bar = el("span", { class: "bar" });
    bar.style.width = `calc((100% - 3.6rem) * ${Math.max(0, Math.min(1, Number(score) || 0))})`;
    list.append(el("li", flagged ? { class: "flagged" } : {},
      el("span", { class: "name", text: name }), el("span", { class: "value", text: fixed(score) }), bar));
  }
  if (!items.length) list.append(el("li", { text: "none" }));
}

function nsfwItems(nsfw) {
  if (!nsfw) return [];
  return Object.entries(nsfw.scores).sort((a, b) => b[1] - a[1]).map(([name, score]) => ({ name, score }));
}

// ---- results grid ---------------------------------------------------------------------------------

function card(hit, owner) {
  const name = basename(hit.path);
  const img = el("img", { alt: name });
  const thumb = el("div", { class: "thumb" }, img);
  const flagged = Boolean(hit.nsfw && hit.nsfw.flagged);
  if (flagged) {
    thumb.append(el("span", { class: "badge", text: "NSFW" }));
    if ($("blur").checked && !state.revealed.has(hit.id)) thumb.classList.add("blurred");
  }
  const tags = (hit.tags || []).slice(0, 4).map((t) => t.tag).join(", ");
  const meta = el("div", { class: "meta" },
    el("span", { class: "score", text: hit.score === null ? "filter match" : `score ${fixed(hit.score)}` }),
    el("span", { class: "name", title: hit.path, text: name }),
    el("span", { class: "tags", text: tags || " " }));
  const button = el("button", { class: "card", type: "button", "data-id": String(hit.id), title: hit.path },
    thumb, meta);
  button.addEventListener("click", () => {
    if (thumb.classList.contains("blurred")) {  // the first click reveals, the next opens
      thumb.classList.remove("blurred");
      state.revealed.add(hit.id);
    } else openDetail(hit.id).catch(failed);
  });
  blobUrl(`/v1/images/${hit.id}/thumbnail`, owner).then((url) => { img.src = url; }).catch(() => {
    img.alt = `${name} (file unavailable)`;
  });
  return button;
}

function renderGrid(container, hits, small = false) {
  releaseUrls(container);
  container.replaceChildren();
  container.className = small ? "grid small" : "grid";
  for (const hit of hits) container.append(card(hit, container));
}

// ---- search ---------------------------------------------------------------------------------------

function filterParams(params) {
  splitList($("tags").value).forEach((t) => params.append("tag", t));
  splitList($("no-tags").value).forEach((t) => params.append("no_tag", t));
  const maxNsfw = Number($("max-nsfw").value);
  if (maxNsfw < 1) params.append("max_nsfw", String(maxNsfw));
  const limit = Math.max(1, Math.min(200, Number($("limit").value) || 40));
  params.append("limit", String(limit));
  return params;
}

async function textSearch() {
  const text = $("q").value.trim();
  const params = filterParams(new URLSearchParams());
  if (text) params.append("q", text);
  if (!text && ![...params.keys()].some((k) => k !== "limit")) {
    status("Type what you are looking for, or set a filter.");
    return;
  }
  status("Searching…");
  clearTagMarks();
  $("search-button").disabled = true;
  try {
    const body = await apiJson("/v1/search?" + params.toString());
    renderGrid($("results"), body.results);
    status(body.results.length ? `${body.results.length} results` + (text ? ` for “${text}”` : "")
      : "Nothing found.");
  } finally {
    $("search-button").disabled = false;
  }
}

async function imageSearch() {
  if (!state.dropped) return;
  const form = new FormData();
  form.append("files", state.dropped, state.dropped.name || "dropped image");
  for (const [key, value] of filterParams(new URLSearchParams())) form.append(key === "tag" ? "tags" :
    key === "no_tag" ? "no_tags" : key, value);
  status("Searching by image…");
  clearTagMarks();
  const body = await apiJson("/v1/search", { method: "POST", body: form });
  renderGrid($("results"), body.results);
  status(`${body.results.length} images like ${state.dropped.name || "the dropped image"}`);
}

// ---- an image's detail view -----------------------------------------------------------------------

async function openDetail(id) {
  const info = await apiJson(`/v1/images/${id}/info`);
  const dialog = $("detail");
  releaseUrls(dialog);
  $("detail-title").textContent = basename(info.paths[0]);
  $("detail-meta").textContent = `${info.width} × ${info.height} px · id ${info.id} · ` + info.paths.join(" · ");
  const image = $("detail-image");
  image.removeAttribute("src");
  image.alt = basename(info.paths[0]);
  const wrap = $("detail-image-wrap");
  wrap.classList.toggle("blurred", Boolean(info.nsfw && info.nsfw.flagged && $("blur").checked
    && !state.revealed.has(info.id)));
  blobUrl(`/v1/images/${id}/thumbnail?size=768`, dialog).then((url) => { image.src = url; }).catch(() => {
    image.alt = "the file is gone or changed since it was indexed";
  });
  const nsfw = $("detail-nsfw");
  nsfw.replaceChildren();
  if (info.nsfw) {
    nsfw.append(el("p", { class: info.nsfw.flagged ? "verdict flagged" : "verdict",
      text: (info.nsfw.flagged ? "Flagged as NSFW" : "Not flagged") + ` (top label: ${info.nsfw.label})` }));
    const list = el("ul", { class: "scores" });
    scoreList(list, nsfwItems(info.nsfw));
    nsfw.append(list);
  } else {
    nsfw.append(el("p", { text: "no NSFW scores in the library" }));
  }
  scoreList($("detail-tags"), (info.tags || []).map((t) => ({ name: t.tag, score: t.score })));
  dialog.hidden = false;
  $("detail-close").focus();
  const similar = $("detail-similar");
  similar.replaceChildren(el("p", { text: "Looking for similar images…" }));
  try {
    const body = await apiJson(`/v1/images/${id}/similar?limit=12`);
    renderGrid(similar, body.results, true);
    if (!body.results.length) similar.replaceChildren(el("p", { text: "No other images." }));
  } catch (error) {
    similar.replaceChildren(el("p", { text: error.message }));
  }
}

function closeDetail() {
  $("detail").hidden = true;
  releaseUrls($("detail"));
  releaseUrls($("detail-similar"));
}

// ---- a dropped image ------------------------------------------------------------------------------

function setDropped(file) {
  if (!file) return;
  state.dropped = file;
  const section = $("dropped");
  releaseUrls(section);
  const url = URL.createObjectURL(file);
  state.urls.set(section, [url]);
  $("dropped-preview").src = url;
  $("dropped-name").textContent = file.name || "dropped image";
  $("analysis").replaceChildren();
  section.hidden = false;
  analyzeDropped().catch(failed);
}

async function analyzeDropped() {
  if (!state.dropped) return;
  const labels = splitList($("labels").value);
  const form = new FormData();
  form.append("files", state.dropped, state.dropped.name || "dropped image");
  form.append("tasks", labels.length ? "tag,classify,nsfw" : "tag,nsfw");
  if (labels.length) form.append("labels", labels.join(","));
  status("Analysing the image…");
  $("analyze-button").disabled = true;
  try {
    const body = await apiJson("/v1/analyze", { method: "POST", body: form });
    const record = body.results[0];
    const out = $("analysis");
    out.replaceChildren();
    if (record.error) {
      out.append(el("p", { class: "flagged", text: record.error }));
    } else {
      const part = (title, items) => {
        const list = el("ul", { class: "scores" });
        scoreList(list, items);
        out.append(el("section", {}, el("h3", { text: title }), list));
      };
      part("Tags", (record.tags || []).slice(0, 25).map((t) => ({ name: t.tag, score: t.score })));
      if (record.labels) part("Labels", record.labels.map((l) => ({ name: l.label, score: l.score })));
      if (record.nsfw) part(record.nsfw.flagged ? "NSFW: flagged" : "NSFW: not flagged", nsfwItems(record.nsfw));
      for (const [key, reason] of Object.entries(record)) {  // a job that failed on it: the rest is shown
        if (key.endsWith("_error")) out.append(el("p", { class: "flagged", text: `${key.slice(0, -6)}: ${reason}` }));
      }
    }
    status(`Analysed ${record.path}`);
  } finally {
    $("analyze-button").disabled = false;
  }
}

function hasFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
}

// ---- wiring ---------------------------------------------------------------------------------------

function guarded(action) {
  return (event) => {
    if (event) event.preventDefault();
    state.retry = action;
    action().catch(failed);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", guarded(textSearch));
  $("find-similar").addEventListener("click", guarded(imageSearch));
  $("analyze-button").addEventListener("click", guarded(analyzeDropped));
  $("file-input").addEventListener("change", (event) => setDropped(event.target.files[0]));
  $("max-nsfw").addEventListener("input", () => { $("max-nsfw-value").textContent = fixed($("max-nsfw").value, 2); });
  $("blur").addEventListener("change", () => {
    for (const thumb of document.querySelectorAll(".thumb")) {
      if (thumb.querySelector(".badge")) thumb.classList.toggle("blurred", $("blur").checked);
    }
  });
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-image-wrap").addEventListener("click", () => $("detail-image-wrap").classList.remove("blurred"));
  $("detail").addEventListener("click", (event) => { if (event.target === $("detail")) closeDetail(); });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !$("detail").hidden) closeDetail(); });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    $("key-panel").hidden = true;
    status("");
    (state.retry || checkHealth)().catch(failed);
  });

  let depth = 0;  // dragenter/dragleave fire for every child element crossed
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    $("drop-overlay").hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $("drop-overlay").hidden = true;
  });
  document.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    $("drop-overlay").hidden = true;
    if (event.dataTransfer && event.dataTransfer.files.length) setDropped(event.dataTransfer.files[0]);
  });
  checkHealth().catch(failed);
});

async function checkHealth() {
  const health = await apiJson("/healthz");
  state.hasLibrary = health.library;
  $("find-similar").disabled = !health.library;
  $("q").disabled = !health.library;
  $("search-button").disabled = !health.library;
  status(health.library ? "Ready. Search the library, or drop an image."
    : "This server has no library: drop an image to tag and classify it.");
}
