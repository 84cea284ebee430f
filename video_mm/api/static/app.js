// video-mm web page: plain JS over the /v1 API. Three views chosen by the URL hash:
//   #/             upload (drag and drop, progress) and the live job list
//   #/videos/<id>  player, captions as a WebVTT track and on a timeline, attention picture
//   #/search?q=... results with thumbnails; a click plays the clip from its start time
"use strict";

const $ = (sel) => document.querySelector(sel);
const JOB_POLL_MS = 1000;
let jobTimer = null;

// ---- API access ---------------------------------------------------------------------------------

function token() { return localStorage.getItem("vmm_token") || ""; }

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) {
    const err = body?.error || { code: String(res.status), message: res.statusText };
    throw new Error(`${err.code}: ${err.message}`);
  }
  return body;
}

function toast(text) {
  const el = $("#toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function clock(seconds) {
  const s = Math.max(0, seconds || 0);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

// ---- Upload -------------------------------------------------------------------------------------

function upload(file) {
  const row = el("li", { class: "upload" }, el("span", { class: "name" }, file.name));
  const bar = el("progress", { max: "100", value: "0" });
  const status = el("span", { class: "muted" }, "uploading");
  row.append(bar, status);
  $("#uploads").prepend(row);

  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/videos");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
  };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status >= 200 && xhr.status < 300) {
      bar.value = 100;
      status.textContent = body.created ? "queued" : "already uploaded";
      status.replaceWith(el("a", { href: `#/videos/${body.video_id}` }, body.created ? "queued: open" : "already uploaded: open"));
      refreshJobs();
    } else {
      row.classList.add("failed");
      status.textContent = body?.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${xhr.status}`;
    }
  };
  xhr.onerror = () => { row.classList.add("failed"); status.textContent = "network error"; };
  xhr.send(form);
}

function setupUpload() {
  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => { for (const f of e.dataTransfer.files) upload(f); });
  $("#file-input").addEventListener("change", (e) => {
    for (const f of e.target.files) upload(f);
    e.target.value = "";
  });
}

// ---- Jobs ---------------------------------------------------------------------------------------

async function refreshJobs() {
  let body;
  try { body = await api("/v1/jobs?limit=50"); } catch (e) { $("#jobs-updated").textContent = e.message; return; }
  const rows = body.jobs.map((j) => el("tr", { class: `job ${j.state}`, "data-job": j.id },
    el("td", {}, el("a", { href: `#/videos/${j.video_id}` }, j.filename || j.video_id.slice(0, 12))),
    el("td", { class: "state" }, j.state),
    el("td", {}, j.stage || ""),
    el("td", {}, el("progress", { max: "1", value: String(j.progress || 0) }), j.error ? el("div", { class: "error small" }, j.error) : ""),
    el("td", { class: "muted small" }, new Date(j.updated_at).toLocaleTimeString()),
  ));
  $("#jobs").replaceChildren(...rows);
  $("#jobs-empty").hidden = rows.length > 0;
  $("#jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// ---- Video page ---------------------------------------------------------------------------------

function bestCaption(clip) {
  return clip.captions.length ? clip.captions[0] : null;
}

async function showVideo(id) {
  const v = await api(`/v1/videos/${encodeURIComponent(id)}`);
  $("#video-title").textContent = v.filename || v.id;
  const facts = [v.state];
  if (v.duration) facts.push(`${clock(v.duration)} long`);
  if (v.width) facts.push(`${v.width}×${v.height}`);
  if (v.fps) facts.push(`${v.fps.toFixed(2)} fps`);
  facts.push(`${v.clips.length} clips`);
  $("#video-meta").textContent = facts.join(" · ");
  $("#video-warning").hidden = !v.warning;
  $("#video-warning").textContent = v.warning ? `Damaged file: ${v.warning}` : "";

  const player = $("#player");
  player.replaceChildren(el("track", { kind: "captions", label: "Captions", srclang: "en", src: v.captions_vtt_url, default: "" }));
  player.onerror = () => {
    $("#current-caption").replaceChildren(el("a", { href: v.file_url, download: v.filename }, "This video cannot be played here: download the original"));
  };
  player.src = v.play_url;  // the file, or an H.264 copy when browsers cannot play its format
  const track = player.querySelector("track");
  track.addEventListener("cuechange", () => {
    // One cue per captioner; the WebVTT voice tag (<v lrcn>) names the model.
    const lines = [...(track.track.activeCues || [])].map((cue) => {
      const voice = cue.text.match(/^<v ([^>]*)>/);
      const text = cue.text.replace(/<[^>]*>/g, "");
      return el("div", {}, voice ? el("span", { class: "model" }, voice[1]) : "", " ", text);
    });
    $("#current-caption").replaceChildren(...lines);
  });
  track.track.mode = "showing";
  $("#vtt-link").href = v.captions_vtt_url;
  $("#srt-link").href = v.captions_srt_url;
  $("#delete-video").onclick = () => deleteVideo(v.id);

  const duration = v.duration || Math.max(1, ...v.clips.map((c) => c.end));
  const segments = v.clips.map((c) => {
    const cap = bestCaption(c);
    const seg = el("button", {
      class: "segment", type: "button", title: `${clock(c.start)}–${clock(c.end)} ${cap ? cap.text : ""}`,
      style: `left:${(100 * c.start) / duration}%;width:${(100 * (c.end - c.start)) / duration}%`,
      onclick: () => { player.currentTime = c.start; player.play(); showAttention(c); },
    }, cap ? cap.text : "");
    seg.dataset.start = c.start;
    seg.dataset.end = c.end;
    return seg;
  });
  const cursor = el("div", { class: "cursor" });
  $("#timeline").replaceChildren(...segments, cursor);
  player.ontimeupdate = () => {
    cursor.style.left = `${(100 * player.currentTime) / duration}%`;
    for (const s of segments) s.classList.toggle("active", player.currentTime >= +s.dataset.start && player.currentTime < +s.dataset.end);
  };

  $("#clips").replaceChildren(...v.clips.map((c) => el("li", { class: "clip" },
    el("img", { src: c.thumbnail_url, alt: "", loading: "lazy", width: "160" }),
    el("div", {},
      el("a", { href: "#", onclick: (e) => { e.preventDefault(); player.currentTime = c.start; player.play(); showAttention(c); } },
        `${clock(c.start)}–${clock(c.end)}`),
      ...c.captions.map((cap) => el("div", { class: "caption" }, el("span", { class: "model" }, cap.model), " ", cap.text))),
  )));
  // What the captioners' output is worth (e.g. trained on synthetic shapes), once per video.
  const notes = [...new Set(v.clips.flatMap((c) => c.captions.flatMap((cap) => (cap.notes || []).map((n) => `${cap.model}: ${n}`))))];
  $("#caption-notes").replaceChildren(...notes.map((n) => el("div", { class: "note small", role: "note" }, `⚠ ${n}`)));
  const first = v.clips.find((c) => c.captions.some((cap) => cap.attention));
  $("#attention-wrap").hidden = !first;
  if (first) showAttention(first);
  if (v.state !== "ready" && v.state !== "failed") setTimeout(() => { if (location.hash === `#/videos/${id}`) showVideo(id); }, 2000);
}

function showAttention(clip) {
  const cap = clip.captions.find((c) => c.attention);
  if (!cap) return;
  $("#attention-wrap").hidden = false;
  const words = cap.text.split(/\s+/).filter(Boolean);
  const rows = cap.attention;
  const canvas = $("#attention");
  const ctx = canvas.getContext("2d");
  const left = 110, top = 8, bottom = 22;
  const cols = Math.max(1, ...rows.map((r) => r.length));
  const cw = (canvas.width - left - 8) / cols;
  const ch = Math.min(28, (canvas.height - top - bottom) / Math.max(1, rows.length));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  rows.forEach((row, i) => {
    const max = Math.max(...row, 1e-9);
    ctx.fillStyle = "#333";
    ctx.textAlign = "right";
    ctx.fillText(words[i] || "<eos>", left - 6, top + i * ch + ch / 2);
    row.forEach((a, j) => {
      const v = Math.round(255 * (a / max));
      ctx.fillStyle = `rgb(${v}, ${Math.round(v * 0.6)}, ${255 - v})`;
      ctx.fillRect(left + j * cw, top + i * ch, cw - 1, ch - 1);
    });
  });
  ctx.fillStyle = "#666";
  ctx.textAlign = "center";
  for (let j = 0; j < cols; j++) ctx.fillText(`f${j + 1}`, left + j * cw + cw / 2, top + rows.length * ch + 10);
  $("#attention-title").textContent = `${cap.model}, clip ${clip.index} (${clock(clip.start)}–${clock(clip.end)})`;
}

async function deleteVideo(id) {
  if (!confirm("Delete this video, its clips, captions and index entries?")) return;
  try {
    await api(`/v1/videos/${encodeURIComponent(id)}`, { method: "DELETE" });
    toast("deleted");
    location.hash = "#/";
  } catch (e) { toast(e.message); }
}

// ---- Search -------------------------------------------------------------------------------------

async function runSearch(q, k) {
  $("#search-q").value = q;
  $("#search-k").value = k;
  if (!q) { $("#results").replaceChildren(); $("#search-status").textContent = ""; return; }
  $("#search-status").textContent = "searching…";
  let body;
  try { body = await api(`/v1/search?q=${encodeURIComponent(q)}&k=${k}`); } catch (e) { $("#search-status").textContent = e.message; return; }
  $("#search-status").textContent = `${body.hits.length} clips for “${body.query}”`;
  // A note every hit carries (the models' provenance, usually) is said once above the results.
  const shared = body.hits.length ? body.hits[0].notes.filter((n) => body.hits.every((h) => h.notes.includes(n))) : [];
  // What the scores are (a rank-fusion score of ~0.03 means nothing without its scale), once.
  const kinds = new Map(body.hits.filter((h) => h.score_kind).map((h) => [h.score_kind, h.score_meaning]));
  const cosine = body.hits.some((h) => h.vector_score != null && h.score_kind !== "cosine");
  $("#search-notes").replaceChildren(
    ...shared.map((n) => el("div", { class: "note small", role: "note" }, `⚠ every result: ${n}`)),
    ...[...kinds].map(([kind, meaning]) => el("div", { class: "legend small muted" }, `score (${kind}): ${meaning}`)),
    ...(cosine ? [el("div", { class: "legend small muted" }, "cosine: the query's similarity to the clip in the search model's space")] : []));
  $("#results").replaceChildren(...body.hits.map((h) => el("li", { class: "result" },
    el("button", { type: "button", class: "thumb", title: `play from ${clock(h.start)}`, onclick: () => playClip(h) },
      el("img", { src: h.thumbnail_url, alt: h.caption, loading: "lazy" }),
      el("span", { class: "time" }, `${clock(h.start)}–${clock(h.end)}`)),
    el("div", { class: "caption" }, h.caption || "(no caption)"),
    el("div", { class: "muted small" },
      el("a", { href: `#/videos/${h.video_id}` }, h.filename || h.video_id.slice(0, 12)), " · ",
      el("span", { class: "score", title: [h.score_meaning, h.score_model].filter(Boolean).join(" · ") }, `${h.score_kind || "score"} ${h.score.toFixed(4)}`),
      h.vector_score != null && h.score_kind !== "cosine" ? el("span", { class: "cosine" }, ` · cosine ${h.vector_score.toFixed(3)}`) : ""),
    // Which models made this hit, and what their output is worth.
    el("div", { class: "models small" },
      ...(h.caption_model ? [el("span", { class: "model", title: "captioner" }, `caption: ${h.caption_model}`), " "] : []),
      ...(h.embedding_model ? [el("span", { class: "model", title: "retrieval model" }, `search: ${h.embedding_model}`)] : [el("span", { class: "model" }, "search: caption text only")])),
    ...h.notes.filter((n) => !shared.includes(n)).map((n) => el("div", { class: "note small", role: "note" }, `⚠ ${n}`)),
  )));
}

function playClip(hit) {
  const wrap = $("#search-player");
  const player = $("#clip-player");
  wrap.hidden = false;
  $("#clip-caption").textContent = `${clock(hit.start)}–${clock(hit.end)} · ${hit.caption}`;
  player.src = `${hit.play_url}#t=${hit.start},${hit.end}`;
  player.addEventListener("loadedmetadata", () => { player.currentTime = hit.start; player.play(); }, { once: true });
  wrap.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// ---- Routing ------------------------------------------------------------------------------------

function show(view) {
  for (const v of ["home", "video", "search"]) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.nav === view);
  clearInterval(jobTimer);
  if (view === "home") { refreshJobs(); jobTimer = setInterval(refreshJobs, JOB_POLL_MS); }
  if (view !== "video") $("#player").pause();
  if (view !== "search") $("#clip-player").pause();
}

function route() {
  const hash = location.hash || "#/";
  const video = hash.match(/^#\/videos\/([0-9a-zA-Z]+)/);
  if (video) { show("video"); showVideo(video[1]).catch((e) => toast(e.message)); return; }
  if (hash.startsWith("#/search")) {
    show("search");
    const params = new URLSearchParams(hash.split("?")[1] || "");
    runSearch(params.get("q") || "", Number(params.get("k")) || 12);
    return;
  }
  show("home");
}

function searchTo(q, k = 12) { location.hash = `#/search?q=${encodeURIComponent(q)}&k=${k}`; }

document.addEventListener("DOMContentLoaded", () => {
  const tok = $("#token");
  tok.value = token();
  tok.addEventListener("change", () => {
    localStorage.setItem("vmm_token", tok.value);
    document.cookie = `vmm_token=${encodeURIComponent(tok.value)}; path=/; SameSite=Strict`;
  });
  setupUpload();
  $("#search-bar").addEventListener("submit", (e) => { e.preventDefault(); searchTo($("#search-bar-q").value); });
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); searchTo($("#search-q").value, $("#search-k").value); });
  window.addEventListener("hashchange", route);
  route();
});
