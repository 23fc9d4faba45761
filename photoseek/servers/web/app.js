// photoseek web page: plain JavaScript, no external resources.
"use strict";
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("photoseek_token") || "";

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(url, options = {}) {
  const headers = Object.assign({}, options.headers || {}, token ? { Authorization: "Bearer " + token } : {});
  const response = await fetch(url, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const given = prompt("This server needs a token:");
    if (given) { token = given; localStorage.setItem("photoseek_token", token); return api(url, options); }
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || (body.detail && JSON.stringify(body.detail)) || response.statusText);
  return body;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function filterParams() {
  const params = new URLSearchParams();
  if ($("f-folder").value.trim()) params.set("folder", $("f-folder").value.trim());
  if ($("f-ext").value.trim()) params.set("ext", $("f-ext").value.trim());
  if ($("f-after").value) params.set("modified_after", $("f-after").value);
  if ($("f-before").value) params.set("modified_before", $("f-before").value);
  if ($("f-taken-after").value) params.set("taken_after", $("f-taken-after").value);
  if ($("f-taken-before").value) params.set("taken_before", $("f-taken-before").value);
  if ($("f-camera").value.trim()) params.set("camera", $("f-camera").value.trim());
  if ($("f-near").value.trim()) params.set("near", $("f-near").value.trim());
  if ($("f-min-width").value) params.set("min_width", $("f-min-width").value);
  return params;
}

// What the photo's header said, as label/value pairs for the viewer (nothing it did not say).
function metadataRows(m) {
  if (!m) return [];
  const rows = [];
  if (m.taken !== null) {
    let when = new Date(m.taken * 1000).toISOString().slice(0, 16).replace("T", " ");  // the photo's own clock
    if (m.taken_offset_minutes !== null) {
      const o = Math.abs(m.taken_offset_minutes);
      when += ` ${m.taken_offset_minutes < 0 ? "-" : "+"}${String(Math.floor(o / 60)).padStart(2, "0")}:${String(o % 60).padStart(2, "0")}`;
    }
    rows.push(["Taken", when]);
  }
  if (m.camera) rows.push(["Camera", m.camera]);
  if (m.lens) rows.push(["Lens", m.lens]);
  if (m.latitude !== null && m.longitude !== null) rows.push(["Position", `${m.latitude.toFixed(5)}, ${m.longitude.toFixed(5)}`]);
  if (m.width && m.height) rows.push(["Size", `${m.width} × ${m.height}`]);
  return rows;
}

function render(results, label) {
  const grid = $("grid");
  grid.classList.remove("groups");
  grid.replaceChildren();
  const fragment = document.createDocumentFragment();
  for (const r of results) fragment.append(makeCard(r));
  grid.append(fragment);
  setStatus(results.length ? `${results.length} results for ${label}` : `No results for ${label}`);
}

// Duplicates: one row per group of near-identical photos, the copy to keep first.
async function showDuplicates() {
  setStatus("Looking for duplicates…");
  try {
    const body = await api("/api/duplicates?" + filterParams().toString());
    const grid = $("grid");
    grid.classList.add("groups");
    grid.replaceChildren();
    body.groups.forEach((group, index) => {
      const section = document.createElement("section");
      section.className = "group";
      const title = document.createElement("h3");
      title.textContent = `Group ${index + 1}: ${group.length} photos`;
      const row = document.createElement("div");
      row.className = "group-cards";
      group.forEach((r, position) => {
        const card = makeCard(r);
        if (position === 0) card.classList.add("keep");
        card.querySelector(".score").textContent = position === 0 ? "keep" : `copy · ${r.score.toFixed(3)}`;
        row.append(card);
      });
      section.append(title, row);
      grid.append(section);
    });
    setStatus(body.groups.length ? `${body.groups.length} groups of near-identical photos among ${body.photos_compared}`
      : `No duplicates among ${body.photos_compared} photos`);
  } catch (error) { setStatus(error.message, true); }
}

function makeCard(r) {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.id = r.id;
  card.dataset.path = r.path;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.src = withToken(r.thumbnail_url);
  img.alt = r.description || r.path;
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("div"); score.className = "score"; score.textContent = `#${r.rank} · ${r.score.toFixed(3)}`;
  const name = document.createElement("div"); name.className = "name"; name.textContent = r.path.split("/").pop();
  const desc = document.createElement("div"); desc.className = "desc"; desc.textContent = r.description || "";
  meta.append(score, name, desc);
  if (r.matched_words && r.matched_words.length) {  // named by the query's words: such results come first
    const words = document.createElement("div"); words.className = "words";
    words.textContent = `words: ${r.matched_words.join(", ")} (${r.matched_in.join(", ")})`;
    meta.append(words);
  }
  card.append(img, meta);
  card.addEventListener("click", () => openViewer(r));
  return card;
}

// Composed queries: terms added to or subtracted from the query, as the API's add= and subtract=
// (words, "W:words" with a weight, or "id:N" for an indexed image).
const terms = [];

function renderTerms() {
  const box = $("terms");
  box.replaceChildren();
  terms.forEach((term, index) => {
    const chip = document.createElement("span");
    chip.className = "chip " + (term.sign > 0 ? "plus" : "minus");
    chip.dataset.term = term.value;
    chip.textContent = `${term.sign > 0 ? "+" : "−"} ${term.label}`;
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "remove"; remove.title = "remove this term"; remove.textContent = "×";
    remove.addEventListener("click", () => { terms.splice(index, 1); renderTerms(); });
    chip.append(remove);
    box.append(chip);
  });
}

function addTerm(sign, value, label) {
  if (!value.trim()) return;
  terms.push({ sign, value: value.trim(), label: label || value.trim() });
  renderTerms();
}

function composedLabel(q) {
  return [`“${q}”`, ...terms.map((t) => `${t.sign > 0 ? "+" : "−"} ${t.label}`)].join(" ");
}

// A search lives in the page's address (?q=...&top_k=...&folder=...), so it can be bookmarked, shared, and
// gone back to with the browser's Back button.
const FILTER_FIELDS = { folder: "f-folder", ext: "f-ext", modified_after: "f-after", modified_before: "f-before",
  taken_after: "f-taken-after", taken_before: "f-taken-before", camera: "f-camera", near: "f-near", min_width: "f-min-width" };

function fromAddress() {
  const params = new URLSearchParams(location.search);
  $("query").value = params.get("q") || "";
  $("top-k").value = params.get("top_k") || "24";
  for (const [name, id] of Object.entries(FILTER_FIELDS)) $(id).value = params.get(name) || "";
  terms.length = 0;
  for (const value of params.getAll("add")) terms.push({ sign: 1, value, label: value });
  for (const value of params.getAll("subtract")) terms.push({ sign: -1, value, label: value });
  renderTerms();
  if (params.get("q")) { searchText(null, false); return; }
  // back to the address without a search: the page as it opened
  document.querySelector("main").classList.remove("searched");
  $("grid").replaceChildren();
  setStatus("");
}

async function searchText(event, remember = true) {
  if (event) event.preventDefault();
  const q = $("query").value;
  if (!q.trim()) { setStatus("Type some words to search for.", true); return; }
  const params = filterParams();
  params.set("q", q);
  params.set("top_k", $("top-k").value || "24");
  for (const term of terms) params.append(term.sign > 0 ? "add" : "subtract", term.value);
  if (remember && location.search !== "?" + params.toString()) history.pushState(null, "", "?" + params.toString());
  document.querySelector("main").classList.add("searched");
  setStatus("Searching…");
  try {
    const body = await api("/api/search?" + params.toString());
    render(body.results, `${composedLabel(q)} (${body.took_ms} ms)`);
  } catch (error) { setStatus(error.message, true); }
}

async function searchImage(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  form.append("top_k", $("top-k").value || "24");
  for (const [name, value] of filterParams()) form.append(name, value);
  setStatus("Searching by image…");
  try {
    const body = await api("/api/search/image", { method: "POST", body: form });
    render(body.results, `image ${file.name}`);
  } catch (error) { setStatus(error.message, true); }
}

async function similar(r) {
  $("viewer").close();
  setStatus("Finding similar images…");
  try {
    const params = filterParams();
    params.set("top_k", $("top-k").value || "24");
    const body = await api(`/api/similar/${r.id}?` + params.toString());
    render(body.results, `images similar to ${r.path.split("/").pop()}`);
  } catch (error) { setStatus(error.message, true); }
}

function openViewer(r) {
  $("viewer-img").src = withToken(r.image_url);
  const named = r.matched_words && r.matched_words.length ? ` — words: ${r.matched_words.join(", ")} (${r.matched_in.join(", ")})` : "";
  $("viewer-caption").textContent = `${r.path} — similarity ${r.score.toFixed(3)}${named}${r.description ? " — " + r.description : ""}`;
  $("viewer-open").href = withToken(r.image_url);
  const meta = $("viewer-meta");
  meta.replaceChildren();
  for (const [label, value] of metadataRows(r.metadata)) {
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = value;
    meta.append(dt, dd);
  }
  $("viewer-similar").onclick = () => similar(r);
  const name = r.path.split("/").pop();
  $("viewer-add").onclick = () => { addTerm(1, `id:${r.id}`, name); $("viewer").close(); };
  $("viewer-subtract").onclick = () => { addTerm(-1, `id:${r.id}`, name); $("viewer").close(); };
  $("viewer").showModal();
}

async function refreshStats() {
  try {
    const s = await api("/api/stats");
    $("stats").textContent = `${s.total_images} images · model ${s.model} (${s.dim}-d) · ${s.store_kind} · collection ${s.collection}`;
    $("empty-index").hidden = s.total_images > 0;
  } catch (error) { $("stats").textContent = error.message; }
}

function renderJob(job) {
  let box = document.getElementById("job-" + job.id);
  if (!box) {
    box = document.createElement("div");
    box.className = "job";
    box.id = "job-" + job.id;
    $("jobs").prepend(box);
  }
  const summary = job.summary;
  const text = job.state === "done"
    ? `indexed ${summary.indexed}, unchanged ${summary.unchanged}, removed ${summary.removed}, failed ${summary.failed.length}`
      + (summary.moved ? `, moved ${summary.moved}` : "")
    : job.state === "failed" ? `failed: ${job.error}` : `${job.state}: ${job.done} / ${job.total}` + (job.failed ? `, ${job.failed} failed` : "");
  box.replaceChildren();
  const title = document.createElement("div"); title.textContent = job.folder;
  const bar = document.createElement("progress"); bar.max = Math.max(job.total, 1); bar.value = job.state === "done" ? bar.max : job.done;
  const line = document.createElement("div"); line.textContent = text;
  box.append(title, bar, line);
}

async function startIndex(event) {
  event.preventDefault();
  const folder = $("index-folder").value.trim();
  if (!folder) return;
  try {
    let job = await api("/api/index", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ folder }) });
    renderJob(job);
    while (job.state === "queued" || job.state === "running") {
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await api(`/api/jobs/${job.id}`);
      renderJob(job);
    }
    refreshStats();
  } catch (error) { setStatus(error.message, true); }
}

$("search-form").addEventListener("submit", searchText);
$("show-duplicates").addEventListener("click", showDuplicates);
$("add-term").addEventListener("click", () => { addTerm(1, $("term").value); $("term").value = ""; });
$("subtract-term").addEventListener("click", () => { addTerm(-1, $("term").value); $("term").value = ""; });
$("term").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("add-term").click(); } });
$("image-file").addEventListener("change", (e) => searchImage(e.target.files[0]));
$("index-form").addEventListener("submit", startIndex);
$("viewer-close").addEventListener("click", () => $("viewer").close());
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dragging"); });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  if (e.dataTransfer.files.length) searchImage(e.dataTransfer.files[0]);
});
window.addEventListener("popstate", fromAddress);
refreshStats();
fromAddress();
