// Showroom product page: the product's box outlined on each "where is it used?" photo, photo
// thumbnails, colour swatches, and "back" returning to the search the shopper came from.
"use strict";

(function () {
  // Each scene's box [x1, y1, x2, y2] is in the pixels of the upright photo: fit a frame to the
  // photo's shape inside the 4:3 card, then place the box over it in percentages.
  for (const card of document.querySelectorAll(".scene[data-box]")) {
    const img = card.querySelector("img");
    const fit = card.querySelector(".scene-fit");
    const box = card.dataset.box.split(",").map(Number);
    if (!img || !fit || box.length !== 4 || box.some((v) => !Number.isFinite(v))) continue;
    const place = () => {
      const w = img.naturalWidth, h = img.naturalHeight;
      if (!w || !h) return;
      const frame = 4 / 3, ratio = w / h;
      fit.style.width = ratio >= frame ? "100%" : `${(ratio / frame) * 100}%`;
      fit.style.height = ratio >= frame ? `${(frame / ratio) * 100}%` : "100%";
      const el = document.createElement("div");
      el.className = "scene-box";
      const [x1, y1, x2, y2] = [Math.max(0, box[0]), Math.max(0, box[1]), Math.min(w, box[2]), Math.min(h, box[3])];
      el.style.left = `${(x1 / w) * 100}%`;
      el.style.top = `${(y1 / h) * 100}%`;
      el.style.width = `${((x2 - x1) / w) * 100}%`;
      el.style.height = `${((y2 - y1) / h) * 100}%`;
      fit.append(el);
    };
    if (img.complete && img.naturalWidth) place(); else img.addEventListener("load", place, { once: true });
  }

  for (const sw of document.querySelectorAll(".swatch[data-color]")) {
    if (/^#[0-9a-f]{3}([0-9a-f]{3})?$/i.test(sw.dataset.color)) sw.style.backgroundColor = sw.dataset.color;
  }

  const main = document.getElementById("main-image");
  const thumbs = document.querySelectorAll(".thumb-button");
  for (const t of thumbs) {
    t.addEventListener("click", () => {
      main.src = t.dataset.src;
      for (const o of thumbs) o.setAttribute("aria-pressed", o === t ? "true" : "false");
    });
  }

  // Back to the results the shopper came from (kept by the browser), not a fresh search page.
  const back = document.getElementById("back");
  if (back && document.referrer) {
    try {
      const from = new URL(document.referrer);
      if (from.origin === location.origin && from.pathname === "/" && history.length > 1) {
        back.textContent = "← Back to results";
        back.addEventListener("click", (ev) => { ev.preventDefault(); history.back(); });
      }
    } catch (e) { /* not a URL */ }
  }
})();
