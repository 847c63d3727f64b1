// convkit serve: the page. Plain JavaScript over the JSON API of docs/serve-api.md; nothing
// is fetched from anywhere but this server.
"use strict";

const PREDICT_GAP_MS = 300; // while drawing: at most ~3 predictions a second
const COMPARE_GAP_MS = 150; // comparing: a slider dragged updates ~6 times a second
const TURN_STEP = 15; // degrees a turn button turns
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

const shapeX = (s) => (s ? s.join("×") : "");

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
  const current = state.run != null && state.run.id === r.id && !cmp.open;
  button.setAttribute("aria-current", String(current));
  button.addEventListener("click", () => {
    closeCompare();
    chooseRun(r.id);
  });
  const tick = el("input", {
    type: "checkbox",
    class: "cmp-tick",
    "data-compare": r.id,
    "aria-label": `Compare ${r.model} (${r.name})`,
  });
  tick.addEventListener("change", () => tickCompare(r.id, tick.checked));
  return el("li", { class: "run-row" }, [tick, button]);
}

function renderRuns() {
  $("run-list").replaceChildren(...state.runs.map(runButton));
  $("runs-empty").hidden = state.runs.length > 0;
  renderTicks();
}

async function loadRuns() {
  const { runs } = await getJson(api(""));
  const changed = JSON.stringify(runs) !== JSON.stringify(state.runs);
  state.runs = runs;
  if (!changed) return;
  const gone = cmp.ids.filter((id) => !runOf(id));
  if (gone.length) cmp.ids = cmp.ids.filter((id) => runOf(id));
  renderRuns();
  if (gone.length && cmp.open) {
    if (cmp.ids.length >= 2) openCompare();
    else closeCompare();
  }
}

const runOf = (id) => state.runs.find((r) => r.id === id);

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
  if (selectedTab() === "robustness") showRobustness();
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
    if (selectedTab() === "robustness") showRobustness(); // new weights: the report is stale
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
  canvas: "canvas", // the element's id
  ctx: null,
  down: false,
  last: null,
  busy: false,
  dirty: false,
  timer: null,
  sent: 0,
};

function clearSketch(pad) {
  const c = $(pad.canvas);
  pad.ctx.fillStyle = "#fff"; // an opaque white page: the server inverts dark-on-light
  pad.ctx.fillRect(0, 0, c.width, c.height);
}

function clearCanvas() {
  clearSketch(draw);
  draw.dirty = false;
}

function canvasPoint(c, e) {
  const r = c.getBoundingClientRect();
  return [((e.clientX - r.left) * c.width) / r.width, ((e.clientY - r.top) * c.height) / r.height];
}

function strokeTo(pad, point) {
  const ctx = pad.ctx;
  ctx.beginPath();
  ctx.moveTo(...pad.last);
  ctx.lineTo(...point);
  ctx.stroke();
  pad.last = point;
}

/** A canvas to draw on with a mouse, a pen or a finger: `started` when a stroke begins,
 * `changed` as it goes and when it ends. */
function setUpSketch(pad, started, changed) {
  const c = $(pad.canvas);
  pad.ctx = c.getContext("2d");
  Object.assign(pad.ctx, {
    lineWidth: 20,
    lineCap: "round",
    lineJoin: "round",
    strokeStyle: "#000",
  });
  clearSketch(pad);
  c.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    try {
      c.setPointerCapture(e.pointerId); // strokes that leave the canvas still end
    } catch (_) {
      // a pointer the browser does not track (synthetic): draw without capture
    }
    pad.down = true;
    started();
    pad.last = canvasPoint(c, e);
    strokeTo(pad, pad.last); // a tap leaves a dot
    changed();
  });
  c.addEventListener("pointermove", (e) => {
    if (!pad.down) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) strokeTo(pad, canvasPoint(c, ev));
    changed();
  });
  const end = () => {
    if (pad.down) changed();
    pad.down = false;
  };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointercancel", end);
}

function setUpCanvas() {
  setUpSketch(draw, () => ($("given").hidden = true), drawingChanged); // the drawing is the image
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

// ---- robustness: `convkit robustness RUN`'s results, when computed ---------------------------

/** The measured line of a report for an image moved (dx, dy) and turned `angle`: the test
 * accuracy with every test image moved or turned alike, where the report measured it. */
function measured(report, dx, dy, angle) {
  if (!report) return null;
  if (dx === 0 && dy === 0 && angle === 0) {
    return `The test set as it is: ${pct(report.clean_accuracy)} right.`;
  }
  const s = report.shift;
  if (angle === 0) {
    if (!s) return "Moves were not measured.";
    const i = s.offsets.indexOf(dy);
    const j = s.offsets.indexOf(dx);
    if (i >= 0 && j >= 0) return `Every test image moved so: ${pct(s.grid[i][j])} right.`;
    return `Moves up to ${s.max_shift} px were measured; this one is beyond.`;
  }
  if (dx === 0 && dy === 0) {
    if (!report.rotate) return "Turns were not measured.";
    const at = report.rotate.find((p) => Math.abs(p.angle - angle) < 1e-9);
    if (at) return `Every test image turned so: ${pct(at.accuracy)} right.`;
    const angles = report.rotate.map((p) => p.angle);
    return `Turns of ${Math.min(...angles)}° to ${Math.max(...angles)}° were measured, in steps.`;
  }
  return "Moved and turned at once: not measured.";
}

async function showRobustness() {
  const id = state.run.id;
  const note = $("robust-note");
  let info;
  try {
    info = await getJson(runUrl("/robustness"));
  } catch (err) {
    if (state.run.id !== id) return;
    note.textContent = err.message;
    note.classList.add("note-bad");
    return;
  }
  if (state.run.id !== id) return;
  note.classList.remove("note-bad");
  const r = info.report;
  for (const img of ["shift-img", "robust-img"]) {
    if (!r || (img === "shift-img" && !r.shift)) {
      $(img).hidden = true;
      delete state.loaded[img];
    }
  }
  if (!r) {
    note.replaceChildren(
      "No robustness results for these weights yet: ",
      el("code", { text: info.command }),
      " tests the run on every test image moved, turned and resized.",
    );
    return;
  }
  const parts = [`Test accuracy ${pct(r.clean_accuracy)} on ${num(r.test_images)} test images`];
  if (r.shift) {
    parts.push(
      `moved up to ${r.shift.max_shift} px: ${pct(r.shift.mean)} on average, the same class ` +
        `for two moves of one image ${pct(r.shift.consistency)} of the time`,
    );
  }
  note.textContent = `${parts.join("; ")}.`;
  const v = `?v=${encodeURIComponent(r.created_at || r.weights || "")}`;
  if (r.shift) showPng("shift-img", runUrl(`/shift.png${v}`), "shift-status", "Drawing the grid…");
  showPng("robust-img", runUrl(`/robustness.png${v}`), "robust-status", "Drawing the curves…");
}

// ---- compare: one image, several runs, moved and turned ------------------------------------

const cmp = {
  ids: [], // the runs ticked, in the order ticked
  open: false, // the compare view is on show
  shape: "", // their image shape, "1,28,28"
  reports: {}, // robustness reports by run id (null: none)
  pad: { canvas: "cmp-canvas", ctx: null, down: false, last: null },
  source: null, // {kind: "drawing"} | {kind: "file", blob, name} | {kind: "test", index}
  dx: 0, // pixels right
  dy: 0, // pixels down
  angle: 0, // degrees counterclockwise
  seq: 0, // the newest request; older answers are dropped
  busy: false,
  dirty: false,
  timer: null,
  sent: 0,
};

/** Why a run cannot join the runs ticked (empty when it can). */
function cannotCompare(r) {
  if (r.error) return "its folder cannot be read";
  if (!r.image_shape || r.epochs === 0) return "it has no kept weights yet";
  const first = runOf(cmp.ids[0]);
  if (first && first.id !== r.id && shapeX(first.image_shape) !== shapeX(r.image_shape)) {
    return `it takes ${shapeX(r.image_shape)} images; the runs ticked take ${shapeX(first.image_shape)}`;
  }
  return "";
}

function renderTicks() {
  for (const tick of document.querySelectorAll(".cmp-tick")) {
    const r = runOf(tick.dataset.compare);
    const why = r ? cannotCompare(r) : "";
    tick.checked = cmp.ids.includes(tick.dataset.compare);
    tick.disabled = Boolean(why) && !tick.checked;
    tick.title = why ? `Cannot compare: ${why}` : "Compare on one drawing";
  }
  for (const button of document.querySelectorAll(".run-item")) {
    const current = !cmp.open && state.run != null && state.run.id === button.dataset.run;
    button.setAttribute("aria-current", String(current));
  }
  const n = cmp.ids.length;
  $("compare-hint").hidden = state.runs.length < 2;
  $("compare-open").hidden = cmp.open || n < 2;
  $("compare-open").textContent = `Compare the ${n} runs ticked`;
}

function tickCompare(id, on) {
  cmp.ids = cmp.ids.filter((x) => x !== id);
  if (on) cmp.ids.push(id);
  renderTicks();
  if (cmp.ids.length >= 2 && (on || cmp.open)) openCompare();
  else closeCompare();
}

function openCompare() {
  const first = runOf(cmp.ids[0]);
  const shape = first.image_shape.join(",");
  cmp.open = true;
  $("compare").hidden = false;
  $("run").hidden = true;
  $("compare").dataset.runs = cmp.ids.join(","); // the runs on show (tests wait for it)
  const hash = `#compare=${cmp.ids.join(",")}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  $("cmp-title").textContent = `Compare ${cmp.ids.length} runs`;
  if (shape !== cmp.shape) {
    // another kind of input: the image and the move belong to the old one
    cmp.shape = shape;
    const [, h, w] = first.image_shape;
    setRange("cmp-dx", Math.floor(w / 2));
    setRange("cmp-dy", Math.floor(h / 2));
    cmp.dx = cmp.dy = cmp.angle = 0;
    dropCompareSource();
  }
  $("cmp-draw-box").hidden = !first.drawable;
  $("cmp-source-title").textContent = first.drawable ? "Or take an image" : "Take an image";
  renderMove();
  renderPanels();
  renderTicks();
  loadReports();
  if (cmp.source) compareChanged();
}

function closeCompare() {
  if (!cmp.open) return renderTicks();
  cmp.open = false;
  cmp.seq += 1; // an answer on its way is not for this view
  $("compare").hidden = true;
  if (state.run) {
    $("run").hidden = false;
    history.replaceState(null, "", `#${state.run.id}`);
  }
  renderTicks();
}

function setRange(id, limit) {
  const input = $(id);
  input.min = String(-limit);
  input.max = String(limit);
}

function dropCompareSource() {
  cmp.source = null;
  cmp.seq += 1;
  clearSketch(cmp.pad);
  $("cmp-given").hidden = true;
  $("cmp-empty").hidden = false;
  $("cmp-input-img").closest("figure").hidden = true;
  $("cmp-conversion").textContent = "";
  delete $("cmp-panels").dataset.move;
}

function renderPanels() {
  const ids = cmp.ids.join(",");
  if ($("cmp-panels").dataset.runs === ids) return; // the same runs: their answers stay
  $("cmp-panels").dataset.runs = ids;
  delete $("cmp-panels").dataset.move; // no answer on show yet
  const panels = cmp.ids.map((id) => {
    const r = runOf(id);
    const acc = r.test_accuracy == null ? "not tested" : `test accuracy ${pct(r.test_accuracy)}`;
    delete state.loaded[`cmp-shift-${id}`]; // a new <img>: its picture is fetched again
    return el("article", { class: "cmp-panel", "data-run": id }, [
      el("h3", { text: r.model }),
      el("p", { class: "muted small", text: `${r.dataset} · ${r.name} · ${acc}` }),
      el("ol", { class: "top5", "aria-label": `${r.model}'s most likely classes` }),
      el("p", { class: "small cmp-measured" }),
      el("img", {
        id: `cmp-shift-${id}`,
        class: "cmp-shift",
        alt: `${r.model}: test accuracy with every test image moved dx right and dy down`,
        hidden: "",
      }),
      el("p", { id: `cmp-shift-status-${id}`, class: "muted small" }),
    ]);
  });
  $("cmp-panels").replaceChildren(...panels);
  $("cmp-empty").hidden = Boolean(cmp.source); // with an image, its answers are on their way
}

const panelOf = (id) => document.querySelector(`.cmp-panel[data-run="${CSS.escape(id)}"]`);

/** Each run's robustness results: its shift grid in its panel, every run's curves below. */
async function loadReports() {
  const ids = cmp.ids.slice();
  const infos = await Promise.all(
    ids.map((id) =>
      getJson(api(`/${encodeURIComponent(id)}/robustness`)).catch((err) => ({ error: err })),
    ),
  );
  if (ids.join() !== cmp.ids.join() || !cmp.open) return; // the runs changed meanwhile
  const withReports = [];
  ids.forEach((id, i) => {
    const info = infos[i];
    const r = info.error ? null : info.report;
    cmp.reports[id] = r;
    const status = $(`cmp-shift-status-${id}`);
    if (info.error) {
      status.textContent = info.error.message;
      status.classList.add("note-bad");
    } else if (!r) {
      status.replaceChildren("Not measured on the test set yet: ", el("code", { text: info.command }));
    } else {
      withReports.push(id);
      const v = `?v=${encodeURIComponent(r.created_at || r.weights || "")}`;
      if (r.shift) {
        const url = api(`/${encodeURIComponent(id)}/shift.png${v}`);
        showPng(`cmp-shift-${id}`, url, status.id, "Drawing its shift grid…");
      }
    }
  });
  renderMeasured();
  if (withReports.length) {
    const v = withReports.map((id) => cmp.reports[id].created_at || "").join(",");
    const q = `runs=${withReports.join(",")}&v=${encodeURIComponent(v)}`;
    showPng("cmp-curves-img", `api/compare/robustness.png?${q}`, "cmp-curves-note", "Drawing…");
    $("cmp-curves-img").alt = `Test accuracy against shift, rotation and scale: ${withReports
      .map((id) => runOf(id).model)
      .join(", ")}`;
  } else {
    delete state.loaded["cmp-curves-img"];
    $("cmp-curves-img").hidden = true;
    $("cmp-curves-note").textContent =
      "None of these runs has been measured yet: convkit robustness RUN measures one.";
  }
}

function renderMeasured() {
  for (const id of cmp.ids) {
    const panel = panelOf(id);
    const line = panel && measured(cmp.reports[id], cmp.dx, cmp.dy, cmp.angle);
    if (panel) panel.querySelector(".cmp-measured").textContent = line || "";
  }
}

// -- the move

const signed = (v, plus, minus, unit) =>
  v === 0 ? `0${unit}` : `${Math.abs(v)}${unit} ${v > 0 ? plus : minus}`;

function renderMove() {
  $("cmp-dx").value = String(cmp.dx);
  $("cmp-dy").value = String(cmp.dy);
  $("cmp-angle").value = String(cmp.angle);
  $("cmp-dx-out").textContent = signed(cmp.dx, "right", "left", " px");
  $("cmp-dy-out").textContent = signed(cmp.dy, "down", "up", " px");
  $("cmp-angle-out").textContent = signed(cmp.angle, "counterclockwise", "clockwise", "°");
  renderMeasured();
}

function clamp(v, input) {
  return Math.max(Number(input.min), Math.min(Number(input.max), v));
}

function setMove(dx, dy, angle) {
  cmp.dx = clamp(dx, $("cmp-dx"));
  cmp.dy = clamp(dy, $("cmp-dy"));
  cmp.angle = clamp(angle, $("cmp-angle"));
  renderMove();
  if (cmp.source) compareChanged();
}

// -- asking the server

/** Ask at most every COMPARE_GAP_MS, one request at a time; the last change is always sent. */
function compareChanged() {
  cmp.dirty = true;
  pumpCompare();
}

function pumpCompare() {
  if (cmp.busy || cmp.timer || !cmp.dirty) return;
  const wait = Math.max(0, cmp.sent + COMPARE_GAP_MS - performance.now());
  cmp.timer = setTimeout(async () => {
    cmp.timer = null;
    cmp.dirty = false;
    cmp.busy = true;
    cmp.sent = performance.now();
    try {
      await compareNow();
    } finally {
      cmp.busy = false;
      pumpCompare();
    }
  }, wait);
}

async function compareNow() {
  const source = cmp.source;
  if (!cmp.open || !source) return;
  const seq = ++cmp.seq;
  const move = { dx: cmp.dx, dy: cmp.dy, angle: cmp.angle };
  const query = new URLSearchParams({ runs: cmp.ids.join(","), ...move });
  let options;
  if (source.kind === "test") {
    options = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ test_index: source.index }),
    };
  } else {
    const blob =
      source.kind === "file"
        ? source.blob
        : await new Promise((ok) => $("cmp-canvas").toBlob(ok, "image/png"));
    if (!blob) return;
    const form = new FormData();
    form.append("image", blob, source.name || "drawing.png");
    options = { method: "POST", body: form };
  }
  try {
    const answer = await getJson(`api/compare?${query}`, options);
    if (seq !== cmp.seq) return; // the image or the runs changed meanwhile
    clearError();
    renderComparison(answer);
  } catch (err) {
    if (seq !== cmp.seq) return;
    const named = !source.name || err.message.includes(source.name);
    showError(named ? err.message : `${source.name}: ${err.message}`);
  }
}

function renderComparison(a) {
  $("cmp-empty").hidden = true;
  const img = $("cmp-input-img");
  img.src = a.input_png;
  img.closest("figure").hidden = false;
  $("cmp-conversion").textContent = `Conversion: ${a.conversion}`;
  for (const answer of a.answers) {
    const panel = panelOf(answer.run);
    if (panel) panel.querySelector(".top5").replaceChildren(...answer.top.map(topRow));
  }
  const m = a.move;
  $("cmp-panels").dataset.move = `${m.dx},${m.dy},${m.angle}`; // the move answered (tests)
}

// -- sources: the drawing, a file, a test image

function setUpCompare() {
  setUpSketch(
    cmp.pad,
    () => {
      if (cmp.source && cmp.source.kind !== "drawing") clearSketch(cmp.pad);
      cmp.source = { kind: "drawing" };
      $("cmp-given").hidden = true;
    },
    compareChanged,
  );
  $("cmp-clear").addEventListener("click", () => {
    dropCompareSource();
    for (const id of cmp.ids) panelOf(id)?.querySelector(".top5").replaceChildren();
  });
  $("cmp-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    if (state.objectUrls.cmpGiven) URL.revokeObjectURL(state.objectUrls.cmpGiven);
    state.objectUrls.cmpGiven = URL.createObjectURL(file);
    showCompareGiven(state.objectUrls.cmpGiven, file.name);
    cmp.source = { kind: "file", blob: file, name: file.name };
    compareChanged();
  });
  $("cmp-random").addEventListener("click", async () => {
    try {
      const t = await getJson(api(`/${encodeURIComponent(cmp.ids[0])}/test-image`));
      showCompareGiven(t.png, `test image ${t.index}, labelled ${t.label}`);
      cmp.source = { kind: "test", index: t.index };
      compareChanged();
    } catch (err) {
      showError(err.message);
    }
  });
  const step = (ddx, ddy, dangle) => () => setMove(cmp.dx + ddx, cmp.dy + ddy, cmp.angle + dangle);
  $("cmp-left").addEventListener("click", step(-1, 0, 0));
  $("cmp-right").addEventListener("click", step(1, 0, 0));
  $("cmp-up").addEventListener("click", step(0, -1, 0));
  $("cmp-down").addEventListener("click", step(0, 1, 0));
  $("cmp-ccw").addEventListener("click", step(0, 0, TURN_STEP));
  $("cmp-cw").addEventListener("click", step(0, 0, -TURN_STEP));
  $("cmp-reset").addEventListener("click", () => setMove(0, 0, 0));
  for (const id of ["cmp-dx", "cmp-dy", "cmp-angle"]) {
    $(id).addEventListener("input", () =>
      setMove(Number($("cmp-dx").value), Number($("cmp-dy").value), Number($("cmp-angle").value)),
    );
  }
  $("cmp-close").addEventListener("click", closeCompare);
  $("compare-open").addEventListener("click", openCompare);
}

function showCompareGiven(src, caption) {
  clearSketch(cmp.pad); // the image is this one now, not the drawing
  $("cmp-given-img").src = src;
  $("cmp-given-img").alt = caption;
  $("cmp-given-caption").textContent = caption;
  $("cmp-given").hidden = false;
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
  if (tab.id === "tab-robustness" && state.run) showRobustness();
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
  setUpCompare();
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
  const compared = wanted.startsWith("compare=") ? wanted.slice(8).split(",").filter(runOf) : [];
  const first = runOf(compared[0] || wanted) || state.runs[0];
  if (first) await chooseRun(first.id);
  if (compared.length >= 2) {
    for (const id of compared) if (!cannotCompare(runOf(id))) tickCompare(id, true);
  }
  setInterval(() => loadRuns().catch(() => {}), RUNS_POLL_MS);
}

start();
