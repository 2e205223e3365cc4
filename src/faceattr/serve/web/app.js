// faceattr web page: uploads photos to /v1/analyze, draws the boxes, shows each face's estimates.
"use strict";
const $ = (s) => document.querySelector(s);
const state = { tasks: [], apiKey: new URLSearchParams(location.hash.slice(1)).get("key") || "" };

function headers() { return state.apiKey ? { "X-API-Key": state.apiKey } : {}; }

function showError(msg) {
  const e = $("#error");
  e.textContent = msg;
  e.hidden = !msg;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/model", { headers: headers() });
    const m = await r.json();
    if (!r.ok) throw new Error(m.error ? m.error.message : r.statusText);
    state.tasks = m.tasks.filter((t) => t.enabled).map((t) => t.name);
    state.explain = m.explain;
    state.unsure = m.uncertain_below;
    $("#tta").checked = Boolean(m.tta_flip); // the service's default path (the shipped model's: on)
    $("#tasks").innerHTML = state.tasks
      .map((t) => `<label><input type="checkbox" class="task" value="${t}" checked> ${t}</label>`).join(" ");
    const cov = Math.round(100 * m.calibration.interval_coverage);
    const views = m.tta_flip === true ? ", each face also read mirrored" : m.tta_flip ? ", unsure faces also read mirrored" : "";
    $("#model").textContent = `${m.model} (faceattr ${m.faceattr_version}, ${m.input_size} px, ${m.runtime}${views}) · ` +
      `age ranges hold the true age ${cov} % of the time · licence: ${m.licence}`;
  } catch (err) {
    showError("Cannot reach the model: " + err.message);
  }
}

function chosenTasks() {
  return [...document.querySelectorAll(".task:checked")].map((c) => c.value);
}

async function analyze(file, extra) {
  const fd = new FormData();
  fd.append("image", file, file.name || "webcam.jpg");
  const q = new URLSearchParams({ tasks: chosenTasks().join(","), tta_flip: $("#tta").checked, ...(extra || {}) });
  const r = await fetch("/v1/analyze?" + q, { method: "POST", body: fd, headers: headers() });
  let body;
  try { body = await r.json(); } catch { body = {}; }
  if (!r.ok) throw new Error((body.error && body.error.message) || `${r.status} ${r.statusText}`);
  return body.results[0];
}


// An error as a person reads it: the file named once, no decoder messages.
function humanError(name, message) {
  const m = message.replace(new RegExp(name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + ":\\s*", "g"), "");
  let why = m;
  if (/not an image|cannot identify|unsupported|decod/i.test(m)) why = "this file is not a photo we can read (JPEG, PNG, WebP, …)";
  else if (/too small|tiny|under \d+ px/i.test(m)) why = "the photo is too small to find a face in";
  else if (/exceeds|too large|over \d+ MB|pixels/i.test(m)) why = "the photo is too large for this server";
  else if (/truncated|empty/i.test(m)) why = "the file is empty or cut short";
  return `${name}: ${why}`;
}

function pct(p) { return (100 * p).toFixed(1) + " %"; }

function attrHtml(name, a) {
  if (a.value !== undefined) {
    const iv = a.interval ?
      ` <span class="probs range" title="80 % of faces' true ages fall within the model's 80 % range">80 % range ${a.interval[0].toFixed(0)}–${a.interval[1].toFixed(0)}</span>` : "";
    const shown = a.probabilities ? a.label : a.value.toFixed(1);
    return `<div class="attr" data-task="${name}"><b>${name}</b> ${shown}${iv}</div>`;
  }
  const ranked = Object.entries(a.probabilities).sort((x, y) => y[1] - x[1]);
  const top = ranked[0];
  const rest = ranked.slice(1, 3).map(([k, p]) => `${k} ${pct(p)}`).join(", ");
  return `<div class="attr" data-task="${name}"><b>${name}</b> ${a.label} ${pct(top[1])}` +
    `<div class="bar"><i style="width:${100 * top[1]}%"></i></div><div class="probs">${rest}</div></div>`;
}

// The drawing style of `faceattr predict --draw` and `faceattr video`: the box, and above it on a dark band the
// face's index (its position in the answer's faces), age with its 80 % range, gender and race; a detection scored
// under the service's uncertain_below gets a thin grey box and "#k ?".
function faceLabel(i, f) {
  if (f.score !== undefined && f.score < state.unsure) return `#${i} ?`;
  const parts = [`#${i}`];
  state.tasks.forEach((t) => {
    const a = f[t];
    if (!a) return;
    if (a.value !== undefined && a.interval && !a.probabilities) {
      parts.push(`${a.value.toFixed(0)} (${a.interval[0].toFixed(0)}-${a.interval[1].toFixed(0)})`);
    } else parts.push(a.label);
  });
  return parts.join(" ");
}

function drawPhoto(canvas, img, faces) {
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0);
  const side = Math.max(img.naturalWidth, img.naturalHeight);
  const lw = Math.max(2, Math.round(side / 500));
  const size = Math.max(12, Math.round(side / 60));
  g.font = `${size}px system-ui, sans-serif`;
  g.textBaseline = "top";
  faces.forEach((f, i) => {
    if (!f.box) return;
    const [x1, y1, x2, y2] = f.box;
    const sure = !(f.score !== undefined && f.score < state.unsure);
    g.lineWidth = sure ? lw : 1;
    g.strokeStyle = sure ? "rgb(0,200,255)" : "rgb(160,160,160)";
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = faceLabel(i, f);
    const w = g.measureText(text).width + 2 * lw, h = size + 2 * lw;
    const top = y1 - h >= 0 ? y1 - h : y1;
    const left = Math.min(Math.max(0, x1), Math.max(0, canvas.width - w));
    g.fillStyle = "rgb(15,25,40)";
    g.fillRect(left, top, w, h);
    g.fillStyle = "#fff";
    g.fillText(text, left + lw, top + lw);
  });
}

async function handle(file) {
  const sec = document.createElement("section");
  sec.className = "photo";
  sec.innerHTML = `<h2></h2><p class="msg">analysing…</p>`;
  sec.querySelector("h2").textContent = file.name || "webcam";
  $("#results").prepend(sec);
  let res;
  try {
    res = await analyze(file);
  } catch (err) {
    sec.remove();
    showError(humanError(file.name || "photo", err.message));
    return;
  }
  const img = new Image();
  img.src = URL.createObjectURL(file);
  await img.decode().catch(() => {});
  const canvas = document.createElement("canvas");
  canvas.className = "boxes";
  canvas.dataset.faces = String(res.num_faces);
  drawPhoto(canvas, img, res.faces);
  sec.querySelector(".msg").textContent = `${res.num_faces} face(s)` + (res.message ? ` — ${res.message}` : "");
  sec.insertBefore(canvas, sec.querySelector(".msg"));
  const cards = document.createElement("div");
  cards.className = "cards";
  res.faces.forEach((f, i) => {
    const c = document.createElement("div");
    const unsure = f.score !== undefined && f.score < state.unsure;
    c.className = "face-card" + (unsure ? " uncertain" : "");
    const attrs = unsure ?
      `<p class="probs">Perhaps not a face (detector confidence ${pct(f.score)}): no estimate shown.</p>` :
      state.tasks.filter((t) => f[t]).map((t) => attrHtml(t, f[t])).join("");
    const opts = state.tasks.filter((t) => f[t]).map((t) => `<option>${t}</option>`).join("");
    c.innerHTML = `<h3>Face #${i}${unsure ? " (uncertain)" : ""}</h3>${attrs}` + (state.explain && !unsure ?
      `<div class="heat"><select aria-label="task">${opts}</select><button type="button" class="explain">Heat-map</button></div>` +
      `<div class="heatmap"></div>` : "");
    const btn = c.querySelector(".explain");
    if (btn) btn.addEventListener("click", async () => {
      const task = c.querySelector("select").value;
      btn.disabled = true;
      const busy = document.createElement("span");
      busy.className = "busy";
      busy.setAttribute("role", "status");
      busy.textContent = "computing the heat-map… (the first takes a few seconds)";
      btn.after(busy);
      try {
        const r = await analyze(file, { explain: task });
        const m = r.faces[i] && r.faces[i].explain && r.faces[i].explain[task];
        c.querySelector(".heatmap").innerHTML = m ? `<img alt="Grad-CAM of ${task}" src="${m}">` : "no heat-map";
      } catch (err) {
        showError(err.message);
      } finally {
        busy.remove();
        btn.disabled = false;
      }
    });
    cards.appendChild(c);
  });
  sec.appendChild(cards);
}

async function handleAll(files) {
  showError("");
  $("#status").textContent = `analysing ${files.length} photo(s)…`;
  await Promise.all([...files].map(handle));
  $("#status").textContent = "";
}

$("#files").addEventListener("change", (e) => handleAll(e.target.files));
const drop = $("#drop");
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#files").click(); }
});
["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => handleAll(e.dataTransfer.files));

$("#camera").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    const v = $("#video");
    v.srcObject = stream;
    v.hidden = false;
    await v.play();
    $("#snap").hidden = false;
  } catch (err) {
    showError("No webcam: " + err.message);
  }
});
$("#snap").addEventListener("click", () => {
  const v = $("#video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  c.toBlob((b) => handleAll([new File([b], "webcam.jpg", { type: "image/jpeg" })]), "image/jpeg", 0.92);
});

loadModel();
