// tilepipe's map page: every style of /styles.json as a Leaflet base layer,
// with a layer switcher. The view lives in the URL hash, as on
// openstreetmap.org: #map=<zoom>/<lat>/<lon>&style=<name>; the short form
// of most slippy maps, #<zoom>/<lat>/<lon>, is read too. Without a hash the
// page opens on the data's bounding box (TileJSON bounds).
"use strict";

function showMessage(text) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.hidden = false;
}

function readHash() {
  const view = {};
  const setView = (text) => {
    const [z, lat, lon] = text.split("/").map(Number);
    if (text.split("/").length === 3 && [z, lat, lon].every(Number.isFinite)) {
      Object.assign(view, { zoom: z, center: [lat, lon] });
    }
  };
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const [key, value] = part.split("=");
    if (value === undefined) {
      setView(key);
    } else if (key === "map" && value) {
      setView(value);
    } else if (key === "style" && value) {
      view.style = decodeURIComponent(value);
    }
  }
  return view;
}

function layerFor(style) {
  const size = style.tile_size || 256;
  // 512-pixel tiles cover what 256-pixel tiles cover one zoom further in.
  const offset = size === 512 ? -1 : 0;
  return L.tileLayer(style.tiles[0], {
    minZoom: style.minzoom - offset,
    maxZoom: style.maxzoom - offset,
    tileSize: size,
    zoomOffset: offset,
    attribution: style.attribution || "",
  });
}

async function start() {
  if (typeof L === "undefined") {
    showMessage("Leaflet is not installed: run `npm install --prefix web` (scripts/install-deps).");
    return;
  }
  const response = await fetch("/styles.json");
  const styles = await response.json();
  if (!styles.length) {
    showMessage("No styles are configured (styles: in config.yaml).");
    return;
  }
  const view = readHash();
  const layers = {};
  for (const style of styles) {
    layers[style.name] = layerFor(style);
  }
  const first = styles.find((s) => s.name === view.style) || styles[0];
  const map = L.map("map", { layers: [layers[first.name]] });
  const [west, south, east, north] = first.bounds;
  if (view.center) {
    map.setView(view.center, view.zoom);
  } else if (east - west < 360 && east > west && north > south) {
    // No view in the URL: open on the data (TileJSON bounds, the box the
    // import stored), fitted to this window.
    map.fitBounds([[south, west], [north, east]]);
  } else {
    // The whole world (no bounds stored), or a box of one point: the
    // server's center, its zoom fitted to a 1024 x 768 window.
    map.setView([first.center[1], first.center[0]], first.center[2]);
  }
  L.control.layers(layers, {}, { collapsed: false }).addTo(map);
  L.control.scale().addTo(map);
  let current = first.name;
  map.on("baselayerchange", (e) => { current = e.name; update(); });
  function update() {
    const c = map.getCenter();
    const z = map.getZoom();
    history.replaceState(null, "",
      `#map=${z}/${c.lat.toFixed(5)}/${c.lng.toFixed(5)}&style=${encodeURIComponent(current)}`);
  }
  map.on("moveend", update);
  window.tilepipeMap = map;
}

start().catch((e) => showMessage(`Cannot load the styles: ${e}`));
