// convkit serve: the page. Plain JavaScript over the JSON API of docs/serve-api.md; nothing
// is fetched from anywhere but this server.
"use strict";

const PREDICT_GAP_MS = 300; // while drawing: at most ~3 predictions a second
const POLL_MS = 2000; // a training run is polled this often
const RUNS_POLL_MS = 15000; // the list of runs, for runs that appear or finish

const $ = (id) => document.getElementById(id);

const state = {
  runs: [], // run summaries, as /api/runs gives them
  run: null, // the chosen run's details (/api/runs/{id})
  source: null, // the current image: {kind: "file", blob, name} or {kind: "test", index}
  predictSeq: 0, // the newest prediction asked for; older answers are dropped
  chooseSeq: 0, // the newest run asked for
  poll: null, // timer of the training poll
  loaded: {}, // image URLs shown, by <img> id, so an unchanged one is not fetched again
  objectUrls: {}, // blob URLs to release when an <img> gets a new one
};

// ---- talking to the server -----------------------------------------------------------------

/** The readable sentence of a failed answer: the server's {"error"}, else its status. */
async function errorOf(res) {
  let text = "";
  try {
    text = await res.text();
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  const detail = text && text.length < 200 ? `: ${text}` : "";
  return `${res.status} ${res.statusText || "error"}${detail}`;
}

async function getJson(url, options) {
  let res;
  try {
    res = await fetch(url, options);
  } catch (err) {
    throw new Error(`the server did not answer (${err.message}); is convkit serve still running?`);
  }
  if (!res.ok) throw new Error(await errorOf(res));
  return res.json();
}

const api = (path) => `api/runs${path}`;
const runUrl = (path) => api(`/${encodeURIComponent(state.run.id)}${path}`);

/** Show a server PNG in an <img>; it is fetched, so a failure shows the server's sentence in
 * the status line `statusId` (which says `waiting` meanwhile). */
async function showPng(imgId, url, statusId, waiting = "") {
  const img = $(imgId);
  const status = $(statusId);
  if (state.loaded[imgId] === url) return;
  state.loaded[imgId] = url;
  status.textContent = waiting;
  status.classList.remove("note-bad");
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(await errorOf(res));
    const blob = await res.blob();
    if (state.loaded[imgId] !== url) return; // another run or epoch asked since
    if (state.objectUrls[imgId]) URL.revokeObjectURL(state.objectUrls[imgId]);
    state.objectUrls[imgId] = URL.createObjectURL(blob);
    img.src = state.objectUrls[imgId];
    img.hidden = false;
    status.textContent = "";
  } catch (err) {
    if (state.loaded[imgId] !== url) return;
    delete state.loaded[imgId]; // asked again later, it is fetched again
    img.hidden = true;
    status.textContent = err.message;
    status.classList.add("note-bad");
  }
}

// ---- errors --------------------------------------------------------------------------------

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// ---- runs ----------------------------------------------------------------------------------

const pct = (x) => (x == null ? "" : `${(100 * x).toFixed(2)}%`);

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? ""
    : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function runButton(r) {
  const acc = r.training
    ? `epoch ${r.epochs} of ${r.planned_epochs}`
    : r.test_accuracy == null
      ? "not tested"
      : `test accuracy ${pct(r.test_accuracy)}`;
  const title = el("span", { class: "model", text: r.model });
  if (r.training) title.append(el("span", { class: "badge", text: "training…" }));
  const button = el(
    "button",
    { type: "button", class: "run-item", "data-run": r.id, "data-name": r.name },
    [
      title,
      el("span", { class: "muted small", text: `${r.dataset} · ${r.name}` }),
      el("span", { class: "acc small", text: acc }),
      el("span", { class: "muted small", text: when(r.updated) }),
    ],
  );
  button.setAttribute("aria-current", String(state.run != null && state.run.id === r.id));
  button.addEventListener("click", () => chooseRun(r.id));
  return el("li", {}, [button]);
}

function renderRuns() {
  $("run-list").replaceChildren(...state.runs.map(runButton));
  $("runs-empty").hidden = state.runs.length > 0;
}

async function loadRuns() {
  const { runs } = await getJson(api(""));
  const changed = JSON.stringify(runs) !== JSON.stringify(state.runs);
  state.runs = runs;
  if (changed) renderRuns();
}

async function chooseRun(id) {
  const token = ++state.chooseSeq; // a run asked for earlier and still loading is dropped
  if (state.run && state.run.id === id) return; // chosen already: keep the drawing
  let run;
  try {
    run = await getJson(api(`/${encodeURIComponent(id)}`));
  } catch (err) {
    if (token === state.chooseSeq) showError(err.message);
    return;
  }
  if (token !== state.chooseSeq) return; // another run was chosen meanwhile
  stopPolling();
  clearError();
  state.run = run;
  state.source = null;
  state.predictSeq += 1; // answers still on their way belong to the previous run
  state.loaded = {};
  if (location.hash !== `#${id}`) history.replaceState(null, "", `#${id}`);
  renderRuns();
  renderRun();
  if (run.training) startPolling();
}

function renderRun() {
  const r = state.run;
  $("run").hidden = false;
  $("run").dataset.run = r.id; // the run on show (tests wait for it)
  renderHead();
  $("draw-box").hidden = !r.drawable;
  clearCanvas();
  clearAnswer();
  $("given").hidden = true;
  renderTables();
  renderPatchControls();
  refreshPictures();
  if (selectedTab() === "confusion") showConfusion();
}

function renderHead() {
  const r = state.run;
  $("run-title").textContent = `${r.model} on ${r.dataset}`;
  const shape = r.image_shape.join("×");
  const acc = r.test_accuracy == null ? "" : ` · test accuracy ${pct(r.test_accuracy)}`;
  $("run-meta").textContent = `${r.name} · ${r.classes.length} classes · input ${shape}${acc}`;
  renderLive();
}

function renderLive() {
  const r = state.run;
  $("run-live").hidden = !r.training;
  $("run-live").textContent = r.training
    ? `Training: epoch ${r.epochs} of ${r.planned_epochs} done. The pictures follow each epoch.`
    : "";
}

/** Pictures that change while a run trains: curves and filters (keyed by finished epochs). */
function refreshPictures() {
  const v = `?epochs=${state.run.epochs}`;
  showPng("curves-img", runUrl(`/curves.png${v}`), "curves-note", "Drawing the curves…");
  showPng("filters-img", runUrl(`/filters.png${v}`), "filters-status", "Drawing the filters…");
}

function showConfusion() {
  if (state.run.training) {
    $("confusion-note").textContent = "The confusion matrix comes when training has finished.";
    return;
  }
  showPng(
    "confusion-img",
    runUrl("/confusion.png"),
    "confusion-note",
    "Classifying the test set… (once per run)",
  );
}

// ---- watch it learn ------------------------------------------------------------------------

function startPolling() {
  stopPolling();
  state.poll = setInterval(pollRun, POLL_MS);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

async function pollRun() {
  const id = state.run.id;
  let fresh;
  try {
    fresh = await getJson(api(`/${encodeURIComponent(id)}`));
  } catch (_) {
    return; // a missed poll is retried in 2 s
  }
  if (!state.run || state.run.id !== id) return;
  const newEpoch = fresh.epochs !== state.run.epochs;
  const finished = !fresh.training;
  Object.assign(state.run, fresh);
  renderHead();
  if (newEpoch || finished) {
    refreshPictures();
    if (state.source) predict(state.source); // the feature maps of the current image, anew
  }
  if (finished) {
    stopPolling();
    delete state.loaded["confusion-img"];
    if (selectedTab() === "confusion") showConfusion();
    loadRuns().catch(() => {});
  }
}

// ---- predicting ----------------------------------------------------------------------------

async function predict(source) {
  if (!state.run) return;
  const seq = ++state.predictSeq;
  const url = runUrl("/predict?explain=1");
  let options;
  if (source.kind === "file") {
    const form = new FormData();
    form.append("image", source.blob, source.name);
    options = { method: "POST", body: form };
  } else {
    options = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ test_index: source.index }),
    };
  }
  try {
    const answer = await getJson(url, options);
    if (seq !== state.predictSeq) return; // a newer image was asked for meanwhile
    state.source = source;
    clearError();
    renderAnswer(answer);
  } catch (err) {
    if (seq !== state.predictSeq) return;
    const named = !source.name || err.message.includes(source.name);
    showError(named ? err.message : `${source.name}: ${err.message}`);
  }
}

function clearAnswer() {
  $("answer-body").hidden = true;
  $("answer-empty").hidden = false;
  $("top5").replaceChildren();
  $("features").replaceChildren();
  $("features-empty").hidden = false;
  $("features-empty").textContent = `${FEATURES_WAIT} Draw, upload or pick an image first.`;
}

function renderAnswer(a) {
  $("answer-empty").hidden = true;
  $("answer-body").hidden = false;
  $("input-img").src = a.input_png;
  $("conversion").textContent = a.conversion ? `Conversion: ${a.conversion}` : "";
  const cam = $("gradcam-img");
  cam.closest("figure").hidden = !a.gradcam_png;
  if (a.gradcam_png) cam.src = a.gradcam_png;
  $("top5").replaceChildren(...a.top.map(topRow));
  renderFeatures(a.features || []);
}

function topRow({ class: name, probability: p }) {
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(100, 100 * p)).toFixed(1)}%`;
  const bar = el("div", { class: "bar", role: "presentation" }, [fill]);
  return el("li", { "data-class": name }, [
    el("span", { class: "cls", text: name, title: name }),
    bar,
    el("span", { class: "pct", text: `${(100 * p).toFixed(1)}%` }),
  ]);
}

const FEATURES_WAIT = "The output of every convolution and pooling layer for the current image.";

function renderFeatures(features) {
  $("features-empty").hidden = features.length > 0;
  $("features-empty").textContent = "This model has no convolution or pooling layer to show.";
  $("features").replaceChildren(
    ...features.map((f) =>
      el("figure", {}, [
        el("img", {
          src: f.png,
          class: "pixelated",
          alt: `Feature maps of ${f.layer}, ${f.shape.join("×")}`,
          loading: "lazy",
        }),
        el("figcaption", { class: "muted small", text: `${f.layer} · ${f.shape.join("×")}` }),
      ]),
    ),
  );
}

function showGiven(src, caption) {
  $("given-img").src = src;
  $("given-img").alt = caption;
  $("given-caption").textContent = caption;
  $("given").hidden = false;
}

function predictFile(file) {
  if (!file) return;
  if (state.objectUrls.given) URL.revokeObjectURL(state.objectUrls.given);
  state.objectUrls.given = URL.createObjectURL(file);
  showGiven(state.objectUrls.given, file.name);
  predict({ kind: "file", blob: file, name: file.name });
}

async function randomTestImage() {
  try {
    const t = await getJson(runUrl("/test-image"));
    const label = typeof t.label === "number" ? state.run.classes[t.label] : t.label;
    showGiven(t.png, `test image ${t.index}, labelled ${label}`);
    await predict({ kind: "test", index: t.index });
  } catch (err) {
    showError(err.message);
  }
}

// ---- drawing -------------------------------------------------------------------------------

const draw = {
  ctx: null,
  down: false,
  last: null,
  busy: false,
  dirty: false,
  timer: null,
  sent: 0,
};

function clearCanvas() {
  const c = $("canvas");
  draw.ctx.fillStyle = "#fff"; // an opaque white page: the server inverts dark-on-light
  draw.ctx.fillRect(0, 0, c.width, c.height);
  draw.dirty = false;
}

function canvasPoint(e) {
  const c = $("canvas");
  const r = c.getBoundingClientRect();
  return [((e.clientX - r.left) * c.width) / r.width, ((e.clientY - r.top) * c.height) / r.height];
}

function strokeTo(point) {
  const ctx = draw.ctx;
  ctx.beginPath();
  ctx.moveTo(...draw.last);
  ctx.lineTo(...point);
  ctx.stroke();
  draw.last = point;
}

function setUpCanvas() {
  const c = $("canvas");
  draw.ctx = c.getContext("2d");
  Object.assign(draw.ctx, {
    lineWidth: 20,
    lineCap: "round",
    lineJoin: "round",
    strokeStyle: "#000",
  });
  clearCanvas();
  c.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    try {
      c.setPointerCapture(e.pointerId); // strokes that leave the canvas still end
    } catch (_) {
      // a pointer the browser does not track (synthetic): draw without capture
    }
    draw.down = true;
    $("given").hidden = true; // the drawing is the image now
    draw.last = canvasPoint(e);
    strokeTo(draw.last); // a tap leaves a dot
    drawingChanged();
  });
  c.addEventListener("pointermove", (e) => {
    if (!draw.down) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) strokeTo(canvasPoint(ev));
    drawingChanged();
  });
  const end = () => {
    if (draw.down) drawingChanged();
    draw.down = false;
  };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    clearCanvas();
    clearAnswer();
    state.source = null;
    state.predictSeq += 1;
  });
}

/** Predict the drawing at most every PREDICT_GAP_MS, one request at a time; the last drawing
 * is always predicted (a change during a request is sent when it returns). */
function drawingChanged() {
  draw.dirty = true;
  pumpDrawing();
}

function pumpDrawing() {
  if (draw.busy || draw.timer || !draw.dirty) return;
  const wait = Math.max(0, draw.sent + PREDICT_GAP_MS - performance.now());
  draw.timer = setTimeout(async () => {
    draw.timer = null;
    draw.dirty = false;
    draw.busy = true;
    draw.sent = performance.now();
    try {
      const blob = await new Promise((ok) => $("canvas").toBlob(ok, "image/png"));
      if (blob) await predict({ kind: "file", blob, name: "drawing.png" });
    } finally {
      draw.busy = false;
      pumpDrawing();
    }
  }, wait);
}

// ---- uploading -----------------------------------------------------------------------------

function setUpUpload() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    predictFile(e.target.files[0]);
    e.target.value = ""; // choosing the same file again predicts again
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = e.dataTransfer ? e.dataTransfer.files : [];
    if (files.length > 1) showError(`drop one image at a time (received ${files.length} files)`);
    else predictFile(files[0]);
  });
  $("random").addEventListener("click", randomTestImage);
  // A file dropped beside the drop zone must not make the browser leave the page for it.
  for (const type of ["dragover", "drop"])
    document.addEventListener(type, (e) => e.preventDefault());
}

// ---- tables: summary and conv arithmetic ---------------------------------------------------

const num = (n) => (n == null ? "" : Number(n).toLocaleString("en-US"));
const shapeText = (s) => (s == null ? "" : `(${s.join(", ")})`);

function table(id, columns, rows, foot) {
  const head = el(
    "tr",
    {},
    columns.map(([label, , cls]) => el("th", { class: cls || "", scope: "col", text: label })),
  );
  const body = rows.map((row) =>
    el(
      "tr",
      {},
      columns.map(([, get, cls]) => el("td", { class: cls || "", text: String(get(row) ?? "") })),
    ),
  );
  const parts = [el("thead", {}, [head]), el("tbody", {}, body)];
  if (foot) {
    const cell = el("td", { colspan: String(columns.length), text: foot.join(" · ") });
    parts.push(el("tfoot", {}, [el("tr", {}, [cell])]));
  }
  $(id).replaceChildren(...parts);
}

function renderTables() {
  const s = state.run.summary;
  table(
    "summary-table",
    [
      ["Layer (type)", (r) => `${r.name} (${r.type})`],
      ["Output shape", (r) => shapeText(r.output_shape)],
      ["Param #", (r) => num(r.params), "num"],
    ],
    s.layers,
    [
      `Total params: ${num(s.total_params)}`,
      `Trainable: ${num(s.trainable_params)}`,
      `Non-trainable: ${num(s.non_trainable_params)}`,
    ],
  );
  const x = state.run.explain;
  const pair = (p) => (p == null ? "" : `${p[0]}×${p[1]}`);
  const formula = ([h, w]) => (h === w ? h : `H: ${h}; W: ${w}`);
  const pads = (p) => (p == null ? "" : `${p.top} ${p.bottom} ${p.left} ${p.right}`);
  table(
    "explain-table",
    [
      ["Layer", (r) => `${r.name} (${r.type})`],
      ["Input", (r) => shapeText(r.input_shape)],
      ["Output", (r) => shapeText(r.output_shape)],
      ["Kernel", (r) => pair(r.kernel)],
      ["Stride", (r) => pair(r.stride)],
      ["Padding t b l r", (r) => pads(r.padding)],
      ["Output size", (r) => (r.formula ? formula(r.formula) : "")],
      ["Receptive field", (r) => pair(r.receptive_field)],
      ["Jump", (r) => pair(r.jump)],
      ["Params", (r) => num(r.params), "num"],
      ["MACs", (r) => num(r.macs), "num"],
    ],
    x.layers,
    [`Total params: ${num(x.total_params)}`, `Total MACs per image: ${num(x.total_macs)}`],
  );
}

// ---- patches -------------------------------------------------------------------------------

function channelsOf(layer) {
  const row = state.run.summary.layers.find((r) => r.name === layer);
  return row && row.output_shape.length === 3 ? row.output_shape[0] : null;
}

function renderPatchControls() {
  const layers = state.run.layers || [];
  const select = $("patch-layer");
  select.replaceChildren(...layers.map((name) => el("option", { value: name, text: name })));
  const convs = layers.filter((n) => !/pool/i.test(n));
  if (convs.length) select.value = convs[convs.length - 1];
  $("patches-form").hidden = layers.length === 0;
  $("patches-figure").hidden = layers.length === 0;
  $("patches-img").hidden = true;
  $("patches-status").textContent = layers.length
    ? ""
    : "This model has no convolution or pooling layer.";
  $("patches-status").classList.remove("note-bad");
  updateFilterRange();
}

function updateFilterRange() {
  const c = channelsOf($("patch-layer").value);
  const input = $("patch-filter");
  if (c) input.max = String(c - 1);
  else input.removeAttribute("max");
  if (c && Number(input.value) > c - 1) input.value = "0";
  input.title = c ? `0 to ${c - 1}` : "";
}

function showPatches(e) {
  e.preventDefault();
  const layer = $("patch-layer").value;
  const k = Number($("patch-filter").value);
  const c = channelsOf(layer);
  if (!Number.isInteger(k) || k < 0 || (c && k >= c)) {
    const top = c ? c - 1 : "the layer's channels - 1";
    showError(
      `filter must be a whole number from 0 to ${top}, received ${$("patch-filter").value}`,
    );
    return;
  }
  const q = `?layer=${encodeURIComponent(layer)}&filter=${k}`;
  $("patches-img").alt = `The test patches that excite filter ${k} of ${layer} most`;
  showPng(
    "patches-img",
    runUrl(`/patches.png${q}`),
    "patches-status",
    `Searching the test set for filter ${k} of ${layer}…`,
  );
}

// ---- tabs ----------------------------------------------------------------------------------

const tabs = () => Array.from(document.querySelectorAll('[role="tab"]'));
const selectedTab = () =>
  tabs()
    .find((t) => t.getAttribute("aria-selected") === "true")
    .id.slice(4);

function selectTab(tab, focus) {
  for (const t of tabs()) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  if (tab.id === "tab-confusion" && state.run) showConfusion();
}

function setUpTabs() {
  for (const t of tabs()) {
    t.addEventListener("click", () => selectTab(t, false));
    t.addEventListener("keydown", (e) => {
      const all = tabs();
      const i = all.indexOf(t);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      selectTab(all[(next + all.length) % all.length], true);
    });
  }
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
  setUpCanvas();
  setUpUpload();
  setUpTabs();
  $("error-close").addEventListener("click", clearError);
  $("given-img").addEventListener("error", () => ($("given").hidden = true)); // not an image
  $("patches-form").addEventListener("submit", showPatches);
  $("patch-layer").addEventListener("change", updateFilterRange);
  try {
    await loadRuns();
  } catch (err) {
    showError(err.message);
    return;
  }
  const wanted = location.hash.slice(1);
  const first = state.runs.find((r) => r.id === wanted) || state.runs[0];
  if (first) await chooseRun(first.id);
  setInterval(() => loadRuns().catch(() => {}), RUNS_POLL_MS);
}

start();
