// Showroom upload page: photo -> every object in the room outlined (the less sure ones dashed) -> pick one,
// tap anywhere, or draw a box -> matching products; "Shop this room" lists every object with its matches.
// No framework: fetch + canvas. Every box is kept in the coordinates of the upright image the server
// decoded (its `width` x `height`), and only scaled to the canvas when drawn.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  if (!app) return;

  const MAX_UPLOAD_BYTES = 8 * 1024 * 1024;  // larger photos are re-encoded smaller before upload
  const MAX_UPLOAD_PIXELS = 16e6;
  const RESIZE_LONG_SIDE = 2560;
  const ROOM_K = 4;  // matches per object in the room list
  const K = 12;
  const minConfidence = parseFloat(app.dataset.minConfidence) || 0.25;
  // The catalog's types, from the page's <datalist> (the browser's own suggestions without this
  // script); the searchable list below replaces those suggestions.
  const allTypes = Array.from(document.querySelectorAll("#type-list option"), (o) => o.value);

  const drop = $("drop"), stage = $("stage"), canvas = $("canvas"), wrap = $("canvas-wrap");
  const busy = $("photo-busy"), busyText = $("photo-busy-text"), statusEl = $("status");
  const objectsEl = $("objects");
  const drawBtn = $("draw"), roomBtn = $("room"), results = $("results"), resultsTitle = $("results-title"), resultsMeta = $("results-meta");
  const typeInput = $("type-input"), typeList = $("type-options"), chips = $("type-chips");
  typeInput.removeAttribute("list");
  const fileInputs = [$("file"), $("camera"), $("again")];
  const ctx = canvas.getContext("2d");

  const state = {
    upload: null,        // the Blob sent to the server
    bitmap: null,        // the upright photo as the browser decoded it
    width: 0, height: 0, // the upright image size, in the server's pixels once it has answered
    boxes: [],           // [{box, label, group, confidence, sure, results}] shown on the photo
    room: null,          // the /api/room answer: every object with its matches, the room's list
    selected: null,      // the box searched for: [x1, y1, x2, y2] in image pixels
    selectedLabel: "",
    selectedGroup: "",   // the product group of the selected proposed object: its search keeps to that group
    allProducts: false,  // the shopper asked to search the whole catalog instead of the object's group
    hover: -1,
    drag: null,          // {start: [x, y], box} while drawing
    drawMode: false,
    point: null,         // a tap to search: [x, y] in image pixels, until the server answers with its region
    tapped: false,       // the selected region is the one proposed under a tap
    roomView: false,     // the results pane shows the whole room
    types: [],           // chosen type filter
    lastResults: [],
    busy: false,
    token: 0,            // increases with each new photo: stale answers are dropped
    search: null,        // AbortController of the search in flight
  };

  // ---------- status and busy states ----------
  function setStatus(text, kind) {
    statusEl.textContent = text || "";
    statusEl.className = "status" + (kind ? " " + kind : "");
    statusEl.setAttribute("role", kind === "error" ? "alert" : "status");
  }

  // While busy the photo shows a spinner and the photo controls are off. While searching
  // (phase "search") the type filter stays usable: changing it starts a new search.
  function setBusy(on, text, phase) {
    state.busy = on;
    busy.hidden = !on;
    busy.classList.toggle("soft", on && phase === "search");
    if (text) busyText.textContent = text;
    wrap.classList.toggle("is-busy", on);
    for (const input of fileInputs) if (input) { input.disabled = on; input.parentElement.classList.toggle("disabled", on); }
    drawBtn.disabled = on;
    roomBtn.disabled = on || !(state.room && state.room.objects.length);
    const filterOff = on && phase !== "search";
    typeInput.disabled = filterOff;
    for (const b of chips.querySelectorAll("button")) b.disabled = filterOff;
    for (const b of document.querySelectorAll(".example")) b.disabled = on;
    for (const b of objectsEl.querySelectorAll("button")) b.disabled = on;
    app.setAttribute("aria-busy", on ? "true" : "false");
  }

  // ---------- loading a photo ----------
  async function decode(blob) {
    if (window.createImageBitmap) {
      try { return await createImageBitmap(blob, { imageOrientation: "from-image" }); } catch (e) { /* fall through */ }
      try { return await createImageBitmap(blob); } catch (e) { /* fall through */ }
    }
    return new Promise((resolve, reject) => {  // an <img> applies EXIF orientation as well
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("This file is not a photo your browser can open. Try a JPEG or PNG."));
      img.src = URL.createObjectURL(blob);
    });
  }

  const sizeOf = (bmp) => [bmp.naturalWidth || bmp.width, bmp.naturalHeight || bmp.height];

  // Phone cameras make 12-50 MP photos: send big ones re-encoded (upright, long side 2560 px).
  async function forUpload(file, bitmap) {
    const [w, h] = sizeOf(bitmap);
    if (file.size <= MAX_UPLOAD_BYTES && w * h <= MAX_UPLOAD_PIXELS) return file;
    const scale = Math.min(1, RESIZE_LONG_SIDE / Math.max(w, h));
    const c = document.createElement("canvas");
    c.width = Math.round(w * scale); c.height = Math.round(h * scale);
    c.getContext("2d").drawImage(bitmap, 0, 0, c.width, c.height);
    const blob = await new Promise((resolve) => c.toBlob(resolve, "image/jpeg", 0.9));
    return blob || file;
  }

  async function loadPhoto(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      // the status line lives beside the photo, hidden until one is open: say it where it is seen too
      const message = `"${file.name}" is not a photo: choose an image file (JPEG, PNG, WebP).`;
      setStatus(message, "error");
      showError(message);
      return;
    }
    const token = ++state.token;
    if (state.search) state.search.abort();
    Object.assign(state, { boxes: [], room: null, selected: null, selectedLabel: "", selectedGroup: "", allProducts: false, hover: -1,
                           drag: null, lastResults: [] });
    setRoomView(false);
    objectsEl.replaceChildren();
    drop.hidden = true; stage.hidden = false;
    clearResults();
    setBusy(true, "Opening your photo…");
    setStatus("");
    let bitmap;
    try { bitmap = await decode(file); } catch (e) {
      setBusy(false); drop.hidden = false; stage.hidden = true; showError(e.message); return;
    }
    if (token !== state.token) return;
    state.bitmap = bitmap;
    [state.width, state.height] = sizeOf(bitmap);
    layout();
    state.upload = await forUpload(file, bitmap);
    setBusy(true, "Detecting objects…");
    setStatus("Looking for everything in your photo…");
    showSkeletons("Finding the objects in your photo…");
    try {
      const data = await post("/api/room", { k: String(ROOM_K) });
      if (token !== state.token) return;
      adoptSize(data.width, data.height);
      state.room = data;
      state.boxes = pickBoxes(data.objects);
      renderObjects();
      setBusy(false);
      layout();
      if (!state.boxes.length) {
        clearResults();
        setStatus("We did not recognise an object here: drag a box around the product you want.", "hint");
        setDrawMode(true);
        return;
      }
      const n = state.boxes.length, unsure = state.boxes.filter((d) => !d.sure).length;
      setStatus(`${n} object${n === 1 ? "" : "s"} found${unsure ? ` (${unsure} less sure, dashed)` : ""}. ` +
                "Tap one, tap anywhere else, or drag a box; \u201cShop this room\u201d lists them all.");
      const best = bestBox(state.boxes);
      select(best.box, best.label, best.group);
    } catch (e) {
      if (token !== state.token) return;
      setBusy(false);
      if (e.name === "AbortError") return;
      setStatus(e.message, "error");
      showError(e.message);
    }
  }

  // The server's width x height are the truth (it applies EXIF orientation like the browser does).
  function adoptSize(w, h) {
    if (!w || !h) return;
    if (w !== state.width || h !== state.height) {
      const [bw, bh] = sizeOf(state.bitmap);
      if (Math.abs(bw / bh - w / h) > 0.02) console.warn(`photo shown ${bw}x${bh}, server sees ${w}x${h}`);
    }
    state.width = w; state.height = h;
  }

  // Boxes worth showing: the server sends exactly the boxes the page offers (engine.data.proposals.page_boxes:
  // sure ones first, no near-copies, capped), the same rule the evaluation scores; sure ones are drawn first.
  function pickBoxes(objects) {
    const sure = (d) => (d.sure === undefined ? d.confidence >= minConfidence : d.sure);
    return [...objects].map((d) => ({ ...d, sure: sure(d) }))
      .sort((a, b) => (b.sure - a.sure) || (b.confidence - a.confidence));
  }

  // The object a shopper most likely means: sure, confident and large.
  function bestBox(boxes) {
    const score = (d) => (d.sure ? 1 : 0.25) * d.confidence * Math.sqrt((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]));
    return boxes.reduce((a, b) => (score(b) > score(a) ? b : a));
  }

  // ---------- the photo canvas ----------
  let view = { scale: 1, dpr: 1, cssW: 0, cssH: 0 };

  function layout() {
    if (!state.bitmap || stage.hidden) return;
    const W = state.width, H = state.height;
    const availW = wrap.clientWidth || stage.clientWidth;
    const top = wrap.getBoundingClientRect().top + window.scrollY;
    const desktop = window.matchMedia("(min-width: 900px)").matches;
    const availH = desktop ? Math.max(260, window.innerHeight - top - 130) : Math.max(220, window.innerHeight * 0.5);
    const scale = Math.min(availW / W, availH / H);
    const cssW = Math.max(1, Math.floor(W * scale)), cssH = Math.max(1, Math.floor(H * scale));
    const dpr = Math.min(window.devicePixelRatio || 1, 3);
    canvas.style.width = cssW + "px";
    canvas.style.height = cssH + "px";
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    view = { scale: canvas.width / W, dpr, cssW, cssH };
    draw();
  }

  const COLORS = { box: "#3ddc97", unsure: "#9ecbff", hover: "#ffd166", selected: "#ff5a5f", drag: "#ffd166" };

  function draw() {
    if (!state.bitmap) return;
    const s = view.scale, dpr = view.dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(state.bitmap, 0, 0, canvas.width, canvas.height);
    const sel = state.drag ? state.drag.box : state.selected;
    if (sel) {  // dim everything but the chosen region
      const [x1, y1, x2, y2] = sel.map((v) => v * s);
      ctx.fillStyle = "rgba(10, 14, 25, 0.45)";
      ctx.beginPath();
      ctx.rect(0, 0, canvas.width, canvas.height);
      ctx.rect(x1, y1, x2 - x1, y2 - y1);
      ctx.fill("evenodd");
    }
    const placed = [];
    const colorOf = (d, i, isSel) => (isSel ? COLORS.selected : i === state.hover ? COLORS.hover : d.sure ? COLORS.box : COLORS.unsure);
    // Less sure objects first and dashed, so sure ones are drawn over them.
    const order = state.boxes.map((d, i) => i).sort((a, b) => state.boxes[a].sure - state.boxes[b].sure);
    for (const i of order) {
      const d = state.boxes[i];
      const isSel = !state.drag && state.selected && sameBox(state.selected, d.box);
      outline(d.box, colorOf(d, i, isSel), isSel ? 3 : d.sure ? 2 : 1.5, !d.sure && !isSel);
    }
    // Labels after all outlines, so no outline crosses a label; sure objects' labels get the first places.
    for (const i of [...order].reverse()) {
      const d = state.boxes[i];
      const isSel = !state.drag && state.selected && sameBox(state.selected, d.box);
      label(d.box, labelText(d), colorOf(d, i, isSel), placed);
    }
    if (state.drag) outline(state.drag.box, COLORS.drag, 2.5, true);
    else if (state.selected && !state.boxes.some((d) => sameBox(d.box, state.selected))) {
      outline(state.selected, COLORS.selected, 3);
      label(state.selected, state.selectedLabel ? pretty(state.selectedLabel) : state.tapped ? "Tapped area" : "Your box", COLORS.selected, placed);
    }
    // Where the labels are, in CSS pixels of the canvas (for tests and tools; not used here).
    canvas.dataset.labels = JSON.stringify(placed.map((p) => ({ text: p.text, x: p.x / dpr, y: p.y / dpr, w: p.w / dpr, h: p.h / dpr })));
    syncObjects();
    function outline(box, color, width, dashed) {
      const [x1, y1, x2, y2] = box.map((v) => v * s);
      ctx.setLineDash(dashed ? [6 * dpr, 4 * dpr] : []);
      ctx.lineJoin = "round";
      ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";  // a dark halo: visible on light and dark photos
      ctx.lineWidth = (width + 2) * dpr;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.strokeStyle = color;
      ctx.lineWidth = width * dpr;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.setLineDash([]);
    }
  }

  // A label chip: white text on a dark rounded pill with a coloured dot, always inside the canvas,
  // placed above the box, else inside its top, else inside its bottom, avoiding earlier chips.
  function label(box, text, color, placed) {
    const s = view.scale, dpr = view.dpr;
    const font = Math.round(Math.max(11, Math.min(14, view.cssW / 48)) * dpr);
    ctx.font = `600 ${font}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
    const padX = 6 * dpr, dot = 7 * dpr, h = Math.round(font * 1.65);
    const w = Math.min(canvas.width, ctx.measureText(text).width + padX * 3 + dot);
    const [x1, y1, x2, y2] = box.map((v) => v * s);
    const x = Math.max(0, Math.min(x1, canvas.width - w));
    const candidates = [y1 - h - 2 * dpr, y1 + 3 * dpr, y2 - h - 3 * dpr, y2 + 2 * dpr]
      .map((y) => Math.max(0, Math.min(y, canvas.height - h)));
    const overlaps = (y) => placed.some((p) => x < p.x + p.w && p.x < x + w && y < p.y + p.h && p.y < y + h);
    const y = candidates.find((c) => !overlaps(c)) ?? candidates[0];
    placed.push({ x, y, w, h, text });
    ctx.fillStyle = "rgba(17, 20, 28, 0.86)";
    roundRect(x, y, w, h, h / 2);
    ctx.fill();
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(x + padX + dot / 2, y + h / 2, dot / 2, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "middle";
    ctx.fillText(text, x + padX * 2 + dot, y + h / 2 + dpr * 0.5, w - padX * 3 - dot);
  }

  function roundRect(x, y, w, h, r) {
    ctx.beginPath();
    ctx.moveTo(x + r, y);
    ctx.arcTo(x + w, y, x + w, y + h, r);
    ctx.arcTo(x + w, y + h, x, y + h, r);
    ctx.arcTo(x, y + h, x, y, r);
    ctx.arcTo(x, y, x + w, y, r);
    ctx.closePath();
  }

  const pretty = (label) => (label ? label[0].toUpperCase() + label.slice(1) : "Object");
  const labelText = (d) => pretty(d.label) + (d.sure ? "" : "?");  // a less sure object: "Lamp?"
  const sameBox = (a, b) => a && b && a.every((v, i) => Math.abs(v - b[i]) < 0.5);

  // ---------- picking and drawing boxes ----------
  function toImage(ev) {
    const r = canvas.getBoundingClientRect();
    const x = ((ev.clientX - r.left) / r.width) * state.width;
    const y = ((ev.clientY - r.top) / r.height) * state.height;
    return [Math.max(0, Math.min(state.width, x)), Math.max(0, Math.min(state.height, y))];
  }

  function hitTest([x, y]) {  // the smallest box under the point: nested objects stay reachable
    let best = -1, bestArea = Infinity;
    state.boxes.forEach((d, i) => {
      const [x1, y1, x2, y2] = d.box;
      const area = (x2 - x1) * (y2 - y1);
      if (x >= x1 && x <= x2 && y >= y1 && y <= y2 && area < bestArea) { best = i; bestArea = area; }
    });
    return best;
  }

  canvas.addEventListener("pointerdown", (ev) => {
    if (state.busy || !state.bitmap || ev.button > 0) return;
    const canDraw = ev.pointerType === "mouse" || state.drawMode;
    state.drag = { start: toImage(ev), box: null, canDraw, id: ev.pointerId };
    if (canDraw) { canvas.setPointerCapture(ev.pointerId); ev.preventDefault(); }
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.bitmap) return;
    const p = toImage(ev);
    if (state.drag && state.drag.canDraw) {
      const [sx, sy] = state.drag.start;
      const box = [Math.min(sx, p[0]), Math.min(sy, p[1]), Math.max(sx, p[0]), Math.max(sy, p[1])];
      const minSide = 6 / (view.scale / view.dpr);  // 6 CSS pixels
      if (state.drag.box || (box[2] - box[0] > minSide && box[3] - box[1] > minSide)) { state.drag.box = box; draw(); }
      return;
    }
    if (ev.pointerType === "mouse" && !state.busy) {
      const hit = hitTest(p);
      if (hit !== state.hover) { state.hover = hit; canvas.classList.toggle("over-box", hit >= 0); draw(); }
    }
  });
  const endDrag = (ev) => {
    const drag = state.drag;
    state.drag = null;
    if (!drag || state.busy) return;
    if (drag.box) {
      const box = drag.box.map(Math.round);
      const minSide = 12 / (view.scale / view.dpr);
      if (box[2] - box[0] >= minSide && box[3] - box[1] >= minSide) { select(box, ""); setDrawMode(false); return; }
      draw();
      setStatus("That box is too small: drag across the whole object.", "hint");
      return;
    }
    if (ev.type === "pointercancel") { draw(); return; }
    const p = toImage(ev);
    const hit = hitTest(p);
    if (hit >= 0) select(state.boxes[hit].box, state.boxes[hit].label, state.boxes[hit].group);
    else searchAt(p);  // a tap or click on no box: the region the engine proposes under it
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", () => { if (state.hover !== -1 && !state.drag) { state.hover = -1; draw(); } });

  // The objects found, also as buttons under the photo: reachable by keyboard and easy to tap.
  function renderObjects() {
    objectsEl.replaceChildren();
    const count = {}, seen = {};
    for (const d of state.boxes) count[d.label] = (count[d.label] || 0) + 1;
    state.boxes.forEach((d, i) => {
      seen[d.label] = (seen[d.label] || 0) + 1;
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button"; b.className = "object-chip" + (d.sure ? "" : " unsure"); b.dataset.index = String(i);
      b.textContent = pretty(d.label) + (count[d.label] > 1 ? ` ${seen[d.label]}` : "") + (d.sure ? "" : "?");
      if (!d.sure) b.title = "Less sure: the detector is not certain this is a " + d.label;
      b.addEventListener("click", () => { if (!state.busy) select(d.box, d.label, d.group); });
      b.addEventListener("mouseenter", () => { state.hover = i; draw(); });
      b.addEventListener("mouseleave", () => { state.hover = -1; draw(); });
      li.append(b);
      objectsEl.append(li);
    });
  }

  function syncObjects() {
    for (const b of objectsEl.querySelectorAll(".object-chip")) {
      const d = state.boxes[Number(b.dataset.index)];
      b.setAttribute("aria-pressed", d && sameBox(d.box, state.selected || []) ? "true" : "false");
      b.disabled = state.busy;
    }
  }

  function setDrawMode(on) {
    state.drawMode = on;
    drawBtn.setAttribute("aria-pressed", on ? "true" : "false");
    drawBtn.textContent = on ? "Drawing: drag on the photo" : "Draw a box";
    canvas.classList.toggle("draw-mode", on);
  }
  drawBtn.addEventListener("click", () => setDrawMode(!state.drawMode));

  // A proposed object (``group`` its product group) or a drawn box (no group) to search.
  function select(box, text, group = "") {
    state.tapped = false;
    state.selected = box.map((v) => Math.round(v));
    state.selectedLabel = text;
    state.selectedGroup = group || "";
    state.allProducts = false;
    setRoomView(false);
    draw();
    search();
  }

  // ---------- search ----------
  async function post(url, fields, signal) {
    const form = new FormData();
    form.append("image", state.upload, state.upload.name || "photo.jpg");
    for (const [k, v] of Object.entries(fields)) form.append(k, v);
    let res;
    try { res = await fetch(url, { method: "POST", body: form, signal }); } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new Error("Could not reach Showroom: check your connection and try again.");
    }
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const why = (data && data.error) || res.statusText || `error ${res.status}`;
      const lead = { 413: "This photo is too large. ", 422: "", 429: "Too many searches at once. " }[res.status] || "";
      throw new Error(lead + why[0].toUpperCase() + why.slice(1));
    }
    return data;
  }

  async function search() {
    if ((!state.selected && !state.point) || !state.upload) return;
    if (state.search) state.search.abort();
    const controller = new AbortController();
    state.search = controller;
    const token = state.token;
    showSkeletons();
    setBusy(true, "Searching the catalog…", "search");
    setStatus(`Searching for products like ${state.point ? "what you tapped" : state.selectedLabel ? "the " + state.selectedLabel : "your box"}…`);
    const fields = state.point ? { point: state.point.join(","), k: String(K) } : { box: state.selected.join(","), k: String(K), detect: "0" };
    state.point = null;
    if (state.types.length) fields.types = state.types.join("|");
    if (state.allProducts) fields.group = "all";  // else a tap keeps to its region's group, and a proposed object to its own
    else if (!fields.point && state.selectedGroup) fields.group = state.selectedGroup;
    try {
      const data = await post("/api/search", fields, controller.signal);
      if (token !== state.token || controller !== state.search) return;
      if (fields.point) {  // the region the engine chose under the tap
        state.selected = data.box;
        state.selectedLabel = data.label || "";
        state.selectedGroup = data.group || "";
        draw();
      }
      showResults(data);
      const what = state.selectedLabel ? `the ${state.selectedLabel}` : "your box";
      setStatus(`Showing products like ${what}. Tap another object, or drag a box around anything.`);
    } catch (e) {
      if (e.name === "AbortError") return;
      showError(e.message);
      setStatus(e.message, "error");
    } finally {
      if (controller === state.search) { state.search = null; setBusy(false); }
    }
  }

  // A tap or click where no box is: the server proposes the region under the point and searches it.
  function searchAt(p) {
    if (!state.upload) return;
    state.point = [Math.min(Math.round(p[0]), state.width - 1), Math.min(Math.round(p[1]), state.height - 1)];
    state.tapped = true;
    state.selected = null;
    state.selectedLabel = "";
    state.selectedGroup = "";
    state.allProducts = false;
    setRoomView(false);
    draw();
    search();
  }

  // ---------- shop this room: every object with its best matches ----------
  function setRoomView(on) {
    state.roomView = on;
    roomBtn.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function showRoom() {
    if (!state.room) return;
    if (state.search) state.search.abort();
    setRoomView(true);
    state.selected = null;
    draw();
    results.replaceChildren();
    results.classList.remove("is-loading");
    results.removeAttribute("aria-busy");
    const shown = state.boxes.filter((d) => d.results && d.results.length);
    resultsTitle.textContent = "In this room";
    const unsure = shown.filter((d) => !d.sure).length;
    resultsMeta.textContent = `${shown.length} object${shown.length === 1 ? "" : "s"}` + (unsure ? ` · ${unsure} less sure` : "") +
      ` · ${state.room.products.length} products`;
    const list = document.createElement("div");
    list.className = "room-list";
    for (const d of shown) {
      const section = document.createElement("section");
      section.className = "room-object" + (d.sure ? "" : " unsure");
      const head = document.createElement("button");
      head.type = "button"; head.className = "room-pick";
      head.textContent = pretty(d.label);
      if (!d.sure) { const tag = document.createElement("span"); tag.className = "maybe"; tag.textContent = "less sure"; head.append(tag); }
      if (d.close_match === false) {  // the calibrated verdict on this object's best match
        const tag = document.createElement("span"); tag.className = "maybe no-close"; tag.textContent = "no close match"; head.append(tag);
      }
      const more = document.createElement("span"); more.className = "room-more"; more.textContent = "See all";
      head.append(more);
      head.addEventListener("click", () => { if (!state.busy) select(d.box, d.label, d.group); });
      head.addEventListener("mouseenter", () => { state.hover = state.boxes.indexOf(d); draw(); });
      head.addEventListener("mouseleave", () => { state.hover = -1; draw(); });
      const row = document.createElement("div");
      row.className = "room-row";
      for (const r of d.results.slice(0, ROOM_K)) row.append(card(r, d.close_match === false));
      section.append(head, row);
      list.append(section);
    }
    results.append(list);
    setStatus("Every object in your photo with its closest products. Tap an object for more.");
  }
  roomBtn.addEventListener("click", () => { if (!state.busy) showRoom(); });

  function clearResults() {
    results.replaceChildren();
    results.classList.remove("is-loading");
    results.removeAttribute("aria-busy");
    resultsTitle.textContent = "Matching products";
    resultsMeta.textContent = "";
  }

  function showSkeletons(title) {
    results.replaceChildren();
    results.classList.add("is-loading");
    results.setAttribute("aria-busy", "true");
    resultsTitle.textContent = title || "Searching…";
    resultsMeta.textContent = "";
    for (let i = 0; i < 6; i++) {
      const sk = document.createElement("div");
      sk.className = "card skeleton";
      sk.innerHTML = '<div class="thumb"></div><div class="line"></div><div class="line short"></div>';
      results.append(sk);
    }
  }

  function showError(message) {
    results.replaceChildren();
    results.classList.remove("is-loading");
    results.removeAttribute("aria-busy");
    resultsTitle.textContent = "Something went wrong";
    const p = document.createElement("p");
    p.className = "notice error";
    p.textContent = message;
    results.append(p);
  }

  const tidy = (text) => String(text).replace(/,(?=\S)/g, ", ");  // "Black-brown,beige" -> "Black-brown, beige"
  const percent = (s) => `${Math.round(Math.max(0, Math.min(1, s)) * 100)}%`;

  function showResults(data) {
    state.lastResults = data.results;
    results.replaceChildren();
    results.classList.remove("is-loading");
    results.removeAttribute("aria-busy");
    const n = data.results.length;
    const what = (state.selectedLabel || "").toLowerCase();
    resultsTitle.textContent = !n ? "No matches" : state.selectedLabel ? `Products like this ${what}` : "Products like your box";
    const t = data.timings_ms || {};
    resultsMeta.textContent = n ? `${n} closest, best first${state.types.length ? ` · ${state.types.join(", ")}` : ""}` +
      (data.in_group ? ` · ${pretty(data.in_group)} only` : "") + (t.total ? ` · ${Math.round(t.total)} ms` : "") : "";
    scopeToggle(data);
    if (!n) {
      const p = document.createElement("p");
      p.className = "notice";
      p.textContent = state.types.length ? "Nothing of the chosen types matches: remove a type filter." : "No products matched.";
      results.append(p);
      return;
    }
    if (data.close_match === false) {  // the calibrated verdict: the catalog has nothing close enough to be this product
      resultsTitle.textContent = "No close match in the catalog";
      const p = document.createElement("p");
      p.className = "notice no-match";
      p.setAttribute("role", "status");
      p.textContent = "We don't seem to carry this one. These are the most similar products, not the same.";
      results.append(p);
    }
    for (const r of data.results) results.append(card(r, data.close_match === false));
    if (!window.matchMedia("(min-width: 900px)").matches) {  // phone: bring the results into view
      const head = resultsTitle.getBoundingClientRect();
      if (head.top > window.innerHeight - 60) resultsTitle.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  // A search kept to the object's group offers the whole catalog, and back (no toggle under a type filter:
  // the shopper's own types decide then).
  function scopeToggle(data) {
    if (state.types.length || !state.selectedGroup || !(data.in_group || state.allProducts)) return;
    const b = document.createElement("button");
    b.type = "button"; b.className = "link scope";
    b.textContent = data.in_group ? "Search all products" : `Only ${pretty(state.selectedGroup).toLowerCase()}`;
    b.addEventListener("click", () => { if (state.busy) return; state.allProducts = !!data.in_group; search(); });
    resultsMeta.append(" · ", b);
  }

  function card(r, similarOnly = false) {
    const a = document.createElement("a");
    a.className = "card result";
    a.href = r.product_url;
    const figure = document.createElement("div");
    figure.className = "thumb";
    const img = document.createElement("img");
    img.alt = r.name; img.loading = "lazy"; img.src = r.image_url;
    img.addEventListener("error", () => figure.classList.add("missing"), { once: true });
    const match = document.createElement("span");
    match.className = "match " + (similarOnly ? "similar" : r.similarity >= 0.7 ? "high" : r.similarity >= 0.5 ? "mid" : "low");
    match.textContent = similarOnly ? "Similar" : `${percent(r.similarity)} match`;
    figure.append(img, match);
    const body = document.createElement("div");
    body.className = "card-body";
    const name = document.createElement("div");
    name.className = "name"; name.textContent = tidy(r.name);
    const type = document.createElement("div");
    type.className = "type"; type.textContent = r.type;
    body.append(name, type);
    const d = r.details || {};
    const facts = [d.color || d.colour, d.size].filter(Boolean).map(tidy).join(" · ");
    if (facts) {
      const f = document.createElement("div");
      f.className = "facts";
      const color = String(d.color || d.colour || "");
      if (/^#[0-9a-f]{3}([0-9a-f]{3})?$/i.test(color)) {  // a colour given as a hex code: show it
        const sw = document.createElement("span");
        sw.className = "swatch"; sw.style.backgroundColor = color;
        f.append(sw);
      }
      f.append(document.createTextNode(facts));
      body.append(f);
    }
    if (d.price) { const p = document.createElement("div"); p.className = "price"; p.textContent = d.price; body.append(p); }
    if (r.same_image_as && r.same_image_as.length) {
      const s = document.createElement("div");
      s.className = "same";
      const m = r.same_image_as.length;
      s.textContent = `Same photo as ${m} other product${m === 1 ? "" : "s"}`;
      body.append(s);
    }
    a.append(figure, body);
    return a;
  }

  // ---------- the type filter: a searchable list of the catalog's types + chips ----------
  let active = -1, shown = [];

  function matches(query) {
    const q = query.trim().toLowerCase();
    const chosen = new Set(state.types);
    if (!q) {  // nothing typed: the types of the current results first, then the rest
      const inResults = [...new Set(state.lastResults.map((r) => r.type))].filter((t) => !chosen.has(t));
      const rest = allTypes.filter((t) => !chosen.has(t) && !inResults.includes(t));
      return inResults.concat(rest).slice(0, 60);
    }
    const starts = [], words = [], contains = [];
    for (const t of allTypes) {
      if (chosen.has(t)) continue;
      const l = t.toLowerCase();
      if (l.startsWith(q)) starts.push(t);
      else if (l.split(/[\s,/-]+/).some((w) => w.startsWith(q))) words.push(t);
      else if (l.includes(q)) contains.push(t);
    }
    return starts.concat(words, contains).slice(0, 60);
  }

  function openList() {
    shown = matches(typeInput.value);
    typeList.replaceChildren();
    if (!shown.length) {
      const li = document.createElement("li");
      li.className = "combo-empty";
      li.textContent = "No type matches";
      typeList.append(li);
    }
    const inResults = new Set(state.lastResults.map((r) => r.type));
    shown.forEach((t, i) => {
      const li = document.createElement("li");
      li.id = `type-opt-${i}`;
      li.setAttribute("role", "option");
      li.className = "combo-option" + (i === active ? " active" : "");
      li.textContent = t;
      if (!typeInput.value.trim() && inResults.has(t)) li.classList.add("in-results");
      li.addEventListener("mousedown", (ev) => { ev.preventDefault(); addType(t); });
      typeList.append(li);
    });
    typeList.hidden = false;
    typeInput.setAttribute("aria-expanded", "true");
    typeInput.setAttribute("aria-activedescendant", active >= 0 ? `type-opt-${active}` : "");
  }

  function closeList() {
    typeList.hidden = true; active = -1;
    typeInput.setAttribute("aria-expanded", "false");
    typeInput.removeAttribute("aria-activedescendant");
  }

  function addType(t) {
    if (!allTypes.includes(t) || state.types.includes(t)) return;
    state.types.push(t);
    typeInput.value = "";
    closeList();
    renderChips();
    search();
  }

  function removeType(t) {
    state.types = state.types.filter((x) => x !== t);
    renderChips();
    search();
  }

  function renderChips() {
    chips.replaceChildren();
    for (const t of state.types) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button"; b.className = "chip"; b.title = `Remove ${t}`;
      b.setAttribute("aria-label", `Remove type ${t}`);
      b.append(document.createTextNode(t));
      const x = document.createElement("span"); x.className = "chip-x"; x.setAttribute("aria-hidden", "true"); x.textContent = "×";
      b.append(x);
      b.addEventListener("click", () => removeType(t));
      li.append(b);
      chips.append(li);
    }
    if (state.types.length > 1) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button"; b.className = "chip clear"; b.textContent = "Clear all";
      b.addEventListener("click", () => { state.types = []; renderChips(); search(); });
      li.append(b); chips.append(li);
    }
    typeInput.placeholder = state.types.length ? "Add another type…" : `Any type — search ${allTypes.length}`;
  }

  typeInput.addEventListener("focus", () => { active = -1; openList(); });
  typeInput.addEventListener("input", () => { active = typeInput.value.trim() && matches(typeInput.value).length ? 0 : -1; openList(); });
  typeInput.addEventListener("blur", closeList);
  typeInput.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      if (typeList.hidden) openList();
      const n = shown.length;
      if (!n) return;
      active = ev.key === "ArrowDown" ? (active + 1) % n : (active - 1 + n) % n;
      openList();
      const el = $(`type-opt-${active}`);
      if (el) el.scrollIntoView({ block: "nearest" });
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      const exact = allTypes.find((t) => t.toLowerCase() === typeInput.value.trim().toLowerCase());
      const pick = active >= 0 ? shown[active] : exact || shown[0];
      if (pick) addType(pick);
    } else if (ev.key === "Escape") {
      closeList();
    } else if (ev.key === "Backspace" && !typeInput.value && state.types.length) {
      removeType(state.types[state.types.length - 1]);
    }
  });

  // ---------- getting a photo in ----------
  for (const input of fileInputs) {
    if (!input) continue;
    input.addEventListener("change", () => { const f = input.files[0]; input.value = ""; loadPhoto(f); });
  }
  for (const target of [drop, stage]) {
    target.addEventListener("dragover", (ev) => { ev.preventDefault(); target.classList.add("over"); });
    target.addEventListener("dragleave", () => target.classList.remove("over"));
    target.addEventListener("drop", (ev) => {
      ev.preventDefault(); target.classList.remove("over");
      if (!state.busy && ev.dataTransfer.files[0]) loadPhoto(ev.dataTransfer.files[0]);
    });
  }
  drop.addEventListener("keydown", (ev) => {
    if ((ev.key === "Enter" || ev.key === " ") && ev.target === drop) { ev.preventDefault(); $("file").click(); }
  });
  document.addEventListener("paste", (ev) => {
    if (state.busy || ev.target === typeInput) return;
    const item = [...(ev.clipboardData ? ev.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (item) loadPhoto(item);
  });
  for (const b of document.querySelectorAll(".example")) {
    b.addEventListener("click", async () => {
      if (state.busy) return;
      try {
        const res = await fetch(b.dataset.url);
        if (!res.ok) throw new Error("That example photo is not available right now.");
        const blob = await res.blob();
        loadPhoto(new File([blob], b.dataset.name || "room.jpg", { type: blob.type || "image/jpeg" }));
      } catch (e) { showError(e.message); }
    });
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(layout, 80); });
  renderChips();
})();
