// Showroom upload page and product page. No framework: fetch + canvas.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // ---- product page: "where is it used?" scenes with the matching crop outlined ----
  const scenesEl = $("scenes");
  if (scenesEl) {
    fetch(scenesEl.dataset.url).then((r) => r.json()).then((data) => {
      if (!data.scenes || !data.scenes.length) { scenesEl.textContent = "No scenes found."; return; }
      for (const s of data.scenes) {
        const card = document.createElement("div");
        card.className = "card";
        const canvas = document.createElement("canvas");
        const img = new Image();
        img.onload = () => {
          canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
          const ctx = canvas.getContext("2d");
          ctx.drawImage(img, 0, 0);
          if (s.box) {
            ctx.lineWidth = Math.max(3, img.naturalWidth / 200); ctx.strokeStyle = "#ff3b30";
            ctx.strokeRect(s.box[0], s.box[1], s.box[2] - s.box[0], s.box[3] - s.box[1]);
          }
        };
        img.src = s.image_url;
        const meta = document.createElement("div");
        meta.className = "meta";
        meta.textContent = `${s.scene} · d=${s.distance.toFixed(3)}`;
        card.append(canvas, meta);
        scenesEl.append(card);
      }
    });
    return;
  }

  // ---- upload page ----
  const drop = $("drop"), fileInput = $("file"), stage = $("stage"), canvas = $("canvas");
  const statusEl = $("status"), results = $("results"), typesEl = $("types");
  const ctx = canvas.getContext("2d");
  let file = null, image = null, detections = [], selected = null, dragStart = null, dragBox = null;

  function setStatus(text, isError) { statusEl.textContent = text; statusEl.className = isError ? "error" : ""; }

  function draw() {
    if (!image) return;
    ctx.drawImage(image, 0, 0);
    ctx.lineWidth = Math.max(2, image.naturalWidth / 300);
    detections.forEach((d, i) => {
      ctx.strokeStyle = selected === i ? "#ff3b30" : "#34c759";
      ctx.strokeRect(d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]);
      ctx.fillStyle = ctx.strokeStyle;
      ctx.font = `${Math.max(14, image.naturalWidth / 60)}px system-ui`;
      ctx.fillText(`${d.label} ${(d.confidence * 100).toFixed(0)}%`, d.box[0] + 4, d.box[1] + Math.max(16, image.naturalWidth / 55));
    });
    if (dragBox) {
      ctx.strokeStyle = "#ff9500";
      ctx.strokeRect(dragBox[0], dragBox[1], dragBox[2] - dragBox[0], dragBox[3] - dragBox[1]);
    }
  }

  function toImageXY(ev) {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  }

  async function postForm(url, extra) {
    const form = new FormData();
    form.append("image", file);
    for (const [k, v] of Object.entries(extra || {})) form.append(k, v);
    const res = await fetch(url, { method: "POST", body: form });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }

  async function load(f) {
    file = f; selected = null; dragBox = null; results.innerHTML = "";
    image = new Image();
    image.onload = async () => {
      canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
      stage.hidden = false; draw();
      setStatus("Finding products…");
      try {
        const data = await postForm("/api/detect");
        detections = data.detections;
        draw();
        setStatus(detections.length ? `${detections.length} objects found (${data.timings_ms.detect} ms). Click one.` :
          "No objects detected: drag a box around the product.");
      } catch (e) { setStatus(e.message, true); }
    };
    image.onerror = () => setStatus("That file is not an image this browser can show.", true);
    image.src = URL.createObjectURL(f);
  }

  async function search(box) {
    setStatus("Searching…");
    const extra = { box: box.map(Math.round).join(","), k: "12" };
    const types = Array.from(typesEl.selectedOptions).map((o) => o.value);
    if (types.length) extra.types = types.join("|");
    try {
      const data = await postForm("/api/search", extra);
      results.innerHTML = "";
      for (const r of data.results) {
        const a = document.createElement("a");
        a.className = "card result"; a.href = r.product_url;
        a.innerHTML = `<img alt=""><div class="name"></div><div class="meta"></div>`;
        a.querySelector("img").src = r.image_url;
        a.querySelector(".name").textContent = r.name;
        a.querySelector(".meta").textContent = `${r.type} · d=${r.distance.toFixed(3)}`;
        results.append(a);
      }
      const t = data.timings_ms;
      setStatus(`${data.results.length} matches (embed ${t.embed} ms, search ${t.search} ms).`);
    } catch (e) { setStatus(e.message, true); }
  }

  canvas.addEventListener("mousedown", (ev) => { dragStart = toImageXY(ev); dragBox = null; });
  canvas.addEventListener("mousemove", (ev) => {
    if (!dragStart) return;
    const [x, y] = toImageXY(ev);
    dragBox = [Math.min(dragStart[0], x), Math.min(dragStart[1], y), Math.max(dragStart[0], x), Math.max(dragStart[1], y)];
    draw();
  });
  canvas.addEventListener("mouseup", (ev) => {
    const [x, y] = toImageXY(ev);
    const start = dragStart; dragStart = null;
    if (dragBox && dragBox[2] - dragBox[0] > 8 && dragBox[3] - dragBox[1] > 8) {
      selected = null; draw(); search(dragBox.map((v, i) => Math.max(0, Math.min(v, i % 2 ? canvas.height : canvas.width))));
      return;
    }
    dragBox = null;
    const hit = detections.findIndex((d) => x >= d.box[0] && x <= d.box[2] && y >= d.box[1] && y <= d.box[3]);
    if (hit >= 0 && start) { selected = hit; draw(); search(detections[hit].box); }
  });

  fileInput.addEventListener("change", () => fileInput.files[0] && load(fileInput.files[0]));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files[0]) load(ev.dataTransfer.files[0]);
  });
})();
