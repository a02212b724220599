// MapLibre GL viewer of one mapcascade layer, with tiles replaced in place as blocks finish.
(async function () {
  "use strict";
  const mc = window.mapcascade;
  const viewer = await mc.openViewer("MapLibre GL");
  if (!viewer) return;
  const { status, info, tj } = viewer;

  const states = new mc.TileStates(status.setCounts); // of the map tiles, by "z/x/y"

  // Tiles come through this protocol ("mapcascade://map/z/x/y", "mapcascade://imagery/z/x/y")
  // so that the page sees X-Tile-Status and can cache-bust a reload, as the other viewers do
  // with their <img>. A tile that fails is drawn empty rather than left "errored": MapLibre
  // (5.24) cannot reload an errored raster tile without drawing it before it has a texture.
  const PROTOCOL = "mapcascade";
  const EMPTY = Uint8Array.from(atob(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNgYGBgAAAABQABeqhXUAAAAABJRU5ErkJggg=="
  ), function (ch) { return ch.charCodeAt(0); }).buffer; // a transparent 1x1 PNG
  const templates = { map: info.template, imagery: mc.imageryTemplate(info.layer) };
  // Protocol paths ("map/z/x/y", "imagery/z/x/y") whose block was announced: their next fetch
  // goes past the HTTP cache.
  const announced = new Set();

  // The tile at `path`, fetched again while its block is announced during the fetch (MapLibre
  // cannot refresh a tile still loading). Resolves to {state, blob}, or null if it failed.
  async function fetchLatest(path, signal) {
    const zxy = path.split("/").slice(1);
    const url = mc.tileUrl(templates[path.split("/")[0]], zxy[0], zxy[1], zxy[2]);
    for (;;) {
      const fresh = announced.delete(path);
      let tile = null;
      try {
        tile = await mc.fetchTile(fresh ? mc.cacheBusted(url) : url, signal);
      } catch (err) {
        if (signal.aborted) throw err; // MapLibre dropped the tile: it left the view
      }
      if (!announced.has(path) || (tile && tile.state === "final")) return tile;
    }
  }

  maplibregl.addProtocol(PROTOCOL, async function (params, abortController) {
    const path = params.url.slice(PROTOCOL.length + 3);
    const key = path.slice(path.indexOf("/") + 1);
    const isMap = path.startsWith("map/");
    if (isMap) states.set(key, "loading");
    let tile;
    try {
      tile = await fetchLatest(path, abortController.signal);
    } catch (err) {
      if (isMap) states.set(key, null);
      throw err;
    }
    // Imagery is 404 until its block is generated; a map tile that failed is "error". Both
    // are reloaded on their block's event (map tiles also by the pending retry).
    if (isMap) states.set(key, tile ? tile.state : "error");
    return { data: tile ? await tile.blob.arrayBuffer() : EMPTY.slice(0) };
  });

  const b = tj.bounds; // [west, south, east, north]
  const raster = { type: "raster", tileSize: 256, minzoom: tj.minzoom, maxzoom: tj.maxzoom };
  // bounds: no requests for tiles outside the layer (they would 404).
  if (b) raster.bounds = b;
  const c = tj.center || [0, 0, tj.minzoom || 0]; // [lon, lat, zoom]
  // MapLibre's zoom scale is for 512 px tiles: the layer's 256 px tiles at zoom z show
  // at their own size at map zoom z - 1.
  const TILE_ZOOM = 1;
  let opacity = 1;
  let map;
  try {
    map = new maplibregl.Map({
      container: "map",
      style: {
        version: 8,
        transition: { duration: 0 }, // the slider acts at once, as on the other pages
        sources: {
          // The imagery under the map; the bar's slider fades the map to compare.
          imagery: Object.assign({ tiles: [PROTOCOL + "://imagery/{z}/{x}/{y}"] }, raster),
          map: Object.assign(
            { tiles: [PROTOCOL + "://map/{z}/{x}/{y}"], attribution: tj.attribution || "" },
            raster
          ),
        },
        layers: [
          { id: "imagery", type: "raster", source: "imagery" },
          { id: "map", type: "raster", source: "map", paint: { "raster-opacity": opacity } },
        ],
      },
      center: [c[0], c[1]],
      zoom: c[2] - TILE_ZOOM,
      minZoom: Math.max(0, tj.minzoom - TILE_ZOOM),
      maxZoom: tj.maxzoom - TILE_ZOOM,
      // Some slack around the layer so its edges can be centred on screen.
      maxBounds: b ? [[b[0] - (b[2] - b[0]), b[1] - (b[3] - b[1])],
        [b[2] + (b[2] - b[0]), b[3] + (b[3] - b[1])]] : undefined,
      // A flat north-up map like the other viewers: tilesInView() relies on it.
      dragRotate: false,
      pitchWithRotate: false,
      maxPitch: 0,
      renderWorldCopies: false,
      attributionControl: { compact: false },
    });
  } catch (err) {
    console.error(err);
    status.error("MapLibre GL needs WebGL, which this browser does not give it: " +
      "the Leaflet and OpenLayers pages do without");
    return;
  }
  map.touchZoomRotate.disableRotation();
  map.keyboard.disableRotation();
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }));
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }));
  if (!tj.center && b) map.fitBounds(b, { animate: false });

  function setOpacity(value) {
    opacity = value;
    if (map.getLayer("map")) map.setPaintProperty("map", "raster-opacity", value);
  }
  map.on("load", function () { setOpacity(opacity); });
  mc.setupControls(info.layer, setOpacity);

  // Whether tile "z/x/y" is one MapLibre shows at this view: its rule for raster sources
  // (zoom rounded, 256 px tiles) over the view's bounding box.
  function tilesInView() {
    const z = Math.min(tj.maxzoom, Math.round(map.getZoom() + TILE_ZOOM));
    const bounds = map.getBounds();
    const n = Math.pow(2, z);
    const col = function (lon) { return Math.floor(((lon + 180) / 360) * n); };
    const row = function (lat) {
      const s = Math.sin((lat * Math.PI) / 180);
      return Math.floor((0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * n);
    };
    const x0 = col(bounds.getWest()), x1 = col(bounds.getEast());
    const y0 = row(bounds.getNorth()), y1 = row(bounds.getSouth());
    return function (key) {
      const t = key.split("/").map(Number);
      return t[0] === z && t[1] >= x0 && t[1] <= x1 && t[2] >= y0 && t[2] <= y1;
    };
  }

  // MapLibre says nothing when it drops a loaded tile: forget those once the view settles,
  // so the status line counts only the tiles on screen.
  map.on("idle", function () {
    const inView = tilesInView();
    Array.from(states.states.keys()).forEach(function (key) {
      if (inView(key)) return;
      states.set(key, null);
      announced.delete("map/" + key);
      announced.delete("imagery/" + key);
    });
  });

  // Reloads the tiles [[z, x, y], ...] of a source that are on screen, each in place.
  function refresh(source, tiles) {
    if (!map.getSource(source)) return; // the style is still loading: nothing shown yet
    map.refreshTiles(source, tiles.map(function (t) { return { z: +t[0], x: +t[1], y: +t[2] }; }));
  }

  function reloadTile(key) {
    announced.add("map/" + key);
    if (states.states.get(key) === "loading") return; // its fetch in flight sees `announced`
    refresh("map", [key.split("/")]);
  }

  // The imagery of a block is stored with its tiles: show it under those on screen.
  function reloadImagery(tiles) {
    const shown = tiles.filter(function (t) { return states.states.has(t.join("/")); });
    shown.forEach(function (t) { announced.add("imagery/" + t.join("/")); });
    refresh("imagery", shown);
  }

  const stats = mc.startLiveRefresh({
    layer: info.layer,
    states: states,
    status: status,
    onBlock: reloadImagery,
    reloadTile: reloadTile,
  });

  window.mapcascadeViewer = {
    mapOpacity: function () { return map.getPaintProperty("map", "raster-opacity"); },
    map: map, states: states, stats: stats,
  };
})();
