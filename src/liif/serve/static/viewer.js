// The LIIF deep-zoom viewer: OpenSeadragon draws IIIF tiles of /iiif/3 (LIIF) and /bicubic/3 (plain bicubic).
// Levels at or below the picture's own resolution come from /bicubic on both sides: LIIF adds nothing there, and
// a LIIF tile encodes every input window under it (a one-tile overview of a big scan encodes the whole scan).
// IIIF levels stop at the picture's own size, so the levels above it are asked for with "^" (sizeUpscaling):
// a custom tile source whose top level is the largest power of two <= the server's max scale; OpenSeadragon
// stretches that level up to the max scale itself.
"use strict";
const TILE_TIMEOUT_MS = 10 * 60 * 1000;
(async function () {
  const at = location.pathname.lastIndexOf("/view/");
  const root = location.pathname.slice(0, at);
  const identifier = decodeURIComponent(location.pathname.slice(at + "/view/".length));
  const escaped = encodeURIComponent(identifier);
  const name = document.getElementById("name");
  name.textContent = identifier;
  document.title = `${identifier} - liif view`;

  // The answer to `url`, or null once `say` has said that none came (the server stopped, the network down).
  async function answerTo(url, say) {
    try {
      return await fetch(url);
    } catch (error) {
      say(`the server did not answer (${error.message})`);
      return null;
    }
  }

  const answer = await answerTo(`${root}/iiif/3/${escaped}/info.json`,
                                (reason) => { name.textContent = `${identifier}: ${reason}`; });
  if (answer === null) return;  // said beside the name, not a blank page
  if (!answer.ok) {  // a picture that cannot be read (or is gone): the server's one-line reason, not a blank page
    name.textContent = `${identifier}: ${(await answer.text()).trim()}`;
    return;
  }
  const info = await answer.json();
  const width = info.width, height = info.height, tile = info.tiles[0].width;
  const maxScale = Math.min(info.maxWidth / width, info.maxHeight / height);
  let top = 1;
  while (top * 2 <= maxScale && top * 2 <= tile) top *= 2;
  const maxLevel = Math.ceil(Math.log2(Math.max(width, height) * top));

  // The IIIF request of a region at `scale`: from `method` above the picture's own resolution, else from /bicubic.
  function imageUrl(method, region, size, scale) {
    return `${root}/${scale > 1 ? method : "bicubic"}/3/${escaped}/${region}/${size}/0/default.png`;
  }

  // One IIIF request per tile: the tile's region in picture pixels at the level's scale.
  function tileSource(method) {
    return {
      width: width * top, height: height * top, tileSize: tile, tileOverlap: 0, minLevel: 0, maxLevel: maxLevel,
      getTileUrl: function (level, x, y) {
        const scale = top / Math.pow(2, maxLevel - level);
        const span = tile / scale;  // picture pixels per tile: a whole number at every level
        const x0 = x * span, y0 = y * span;
        const w = Math.min(span, width - x0), h = Math.min(span, height - y0);
        const size = scale >= 1 ? `^${w * scale},${h * scale}`
                                : `${Math.ceil(w * scale)},${Math.ceil(h * scale)}`;
        return imageUrl(method, `${x0},${y0},${w},${h}`, size, scale);
      },
    };
  }

  // A LIIF tile waits in the server's queue behind the others, seconds each on a CPU: OpenSeadragon's 30 s left holes
  // (and logged errors) where the server was still rendering. The default, as the navigator's loader takes it too.
  OpenSeadragon.DEFAULT_SETTINGS.timeout = TILE_TIMEOUT_MS;
  const viewer = OpenSeadragon({
    id: "viewer", prefixUrl: `${root}/static/openseadragon/images/`, tileSources: tileSource("iiif"),
    maxZoomPixelRatio: maxScale / top, minPixelRatio: 1, showNavigator: true, visibilityRatio: 0.5,
    imageLoaderLimit: 4,
  });
  await new Promise((resolve) => viewer.addOnceHandler("open", resolve));
  const liif = viewer.world.getItemAt(0);
  const bicubic = await new Promise((resolve) => viewer.addTiledImage({
    tileSource: tileSource("bicubic"), opacity: 0, success: (event) => resolve(event.item) }));

  const readout = document.getElementById("zoom");
  const mode = document.getElementById("mode");
  const split = document.getElementById("split");
  const divider = document.getElementById("divider");
  const same = document.getElementById("same");

  // Screen (CSS) pixels per picture pixel.
  function zoom() { return liif.viewportToImageZoom(viewer.viewport.getZoom(true)) * top; }

  function update() {
    readout.textContent = `x${zoom().toFixed(1)}`;
    // OpenSeadragon draws the largest level whose pixels cover a whole device pixel (minPixelRatio 1), stretched:
    // the first LIIF level (x2) shows from 2 device pixels per picture pixel, and below that both sides are bicubic.
    const liifFrom = 2 / (window.devicePixelRatio || 1);
    same.hidden = zoom() >= liifFrom;
    same.textContent = `bicubic on both sides below x${liifFrom.toFixed(1)}`;
    const splitting = mode.value === "split";
    split.hidden = divider.hidden = !splitting;
    bicubic.setOpacity(mode.value === "liif" ? 0 : 1);
    if (splitting) {
      const x = viewer.container.clientWidth * split.value / 100;
      divider.style.left = `${x}px`;
      const edge = bicubic.viewerElementToImageCoordinates(new OpenSeadragon.Point(x, 0)).x;
      bicubic.setClip(new OpenSeadragon.Rect(0, 0, Math.max(0, edge), height * top));
    } else {
      bicubic.setClip(null);
    }
  }
  viewer.addHandler("animation", update);
  viewer.addHandler("resize", update);
  mode.addEventListener("change", update);
  split.addEventListener("input", update);
  update();

  // Zoom to `scale` screen pixels per picture pixel, centred on picture pixel (x, y).
  function zoomTo(scale, x, y) {
    viewer.viewport.panTo(liif.imageToViewportCoordinates(x * top, y * top), true);
    viewer.viewport.zoomTo(liif.imageToViewportZoom(scale / top), null, true);
    viewer.viewport.applyConstraints(true);
    update();
  }

  // The view as one IIIF request: the visible region at screen resolution.
  function viewUrl() {
    const box = liif.viewportToImageRectangle(viewer.viewport.getBounds(true));
    const x0 = Math.max(0, box.x / top), y0 = Math.max(0, box.y / top);
    const x1 = Math.min(width, (box.x + box.width) / top), y1 = Math.min(height, (box.y + box.height) / top);
    const scale = zoom() * (window.devicePixelRatio || 1);
    const pct = [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height].map((v) => (100 * v).toFixed(6));
    const w = Math.max(1, Math.round((x1 - x0) * scale)), h = Math.max(1, Math.round((y1 - y0) * scale));
    return imageUrl("iiif", `pct:${pct.join(",")}`, `^${w},${h}`, scale);
  }

  document.getElementById("save").addEventListener("click", async () => {
    const answer = await answerTo(viewUrl(), alert);
    if (answer === null) return;
    if (!answer.ok) { alert(await answer.text()); return; }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await answer.blob());
    link.download = `${identifier.replace(/.*\//, "").replace(/\.[^.]*$/, "")}-x${zoom().toFixed(1)}.png`;
    link.click();
    URL.revokeObjectURL(link.href);
  });

  window.liif = { viewer, liif, bicubic, zoom, zoomTo, viewUrl, update, top };
})();
