// tilepipe's map page: every style of /styles.json as a Leaflet base layer,
// with a layer switcher. The view lives in the URL hash, as on
// openstreetmap.org: #map=<zoom>/<lat>/<lon>&style=<name>; the short form
// of most slippy maps, #<zoom>/<lat>/<lon>, is read too. Without a hash the
// page opens on the data's bounding box (TileJSON bounds). An optional
// status panel (the "Status" button, or `&status=1` in the hash) shows
// /status.json: replication lag, the last batch, the render queue.
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
    } else if (key === "status") {
      view.status = value !== "0";
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

// A duration in words a person reads at a glance.
function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "unknown";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// The lines of the status panel for a /status.json body.
function describeStatus(status) {
  const lines = [];
  const replication = status.replication || {};
  let lag = `Replication lag: ${formatSeconds(replication.lag_seconds)}`;
  if (replication.sequence !== null && replication.sequence !== undefined) {
    lag += ` (sequence ${replication.sequence})`;
  }
  if (replication.apply_failing) lag += ", applying fails (retrying)";
  lines.push(lag);
  const batch = status.last_batch;
  lines.push(batch
    ? `Last batch: ${batch.changes} changes, ${formatSeconds(batch.age_seconds)} ago`
    : "Last batch: none since the start");
  const render = status.render;
  if (render) {
    // Highest priority first, as the server takes them.
    const queued = ["missing", "dirty", "expired", "background"]
      .map((p) => `${p} ${render.queued[p] ?? 0}`).join(", ");
    let queue = `Render queue: ${render.queued_total} waiting (${queued}), ${render.in_progress} rendering`;
    if (render.background_paused) queue += ", background paused for a batch";
    lines.push(queue);
    lines.push(`Rendered since the start: ${render.rendered_total} (${render.failed_total} failed)`);
  } else {
    lines.push("Render queue: no renderer in this process");
  }
  return lines;
}

// The status panel: a button that opens a box polling /status.json every
// 5 s while it is open. `onToggle` learns when it opens or closes.
function addStatusPanel(map, open, onToggle) {
  const Panel = L.Control.extend({
    onAdd() {
      const box = L.DomUtil.create("div", "leaflet-bar tilepipe-status");
      const button = L.DomUtil.create("a", "tilepipe-status-button", box);
      button.href = "#";
      button.textContent = "Status";
      button.title = "Pipeline status (/status.json)";
      const body = L.DomUtil.create("div", "tilepipe-status-body", box);
      body.id = "status";
      L.DomEvent.disableClickPropagation(box);
      let timer = null;
      async function refresh() {
        try {
          const response = await fetch("/status.json", { cache: "no-store" });
          body.textContent = describeStatus(await response.json()).join("\n");
        } catch (e) {
          body.textContent = `Status unavailable: ${e}`;
        }
      }
      function show(visible) {
        body.hidden = !visible;
        clearInterval(timer);
        timer = null;
        if (visible) {
          refresh();
          timer = setInterval(refresh, 5000);
        }
        onToggle(visible);
      }
      L.DomEvent.on(button, "click", (e) => {
        L.DomEvent.preventDefault(e);
        show(body.hidden);
      });
      show(open);
      return box;
    },
  });
  new Panel({ position: "bottomleft" }).addTo(map);
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
  let statusOpen = Boolean(view.status);
  map.on("baselayerchange", (e) => { current = e.name; update(); });
  function update() {
    const c = map.getCenter();
    const z = map.getZoom();
    const status = statusOpen ? "&status=1" : "";
    history.replaceState(null, "",
      `#map=${z}/${c.lat.toFixed(5)}/${c.lng.toFixed(5)}&style=${encodeURIComponent(current)}${status}`);
  }
  addStatusPanel(map, statusOpen, (open) => { statusOpen = open; update(); });
  map.on("moveend", update);
  window.tilepipeMap = map;
}

start().catch((e) => showMessage(`Cannot load the styles: ${e}`));
