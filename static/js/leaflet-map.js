// Leaflet viewer of one mapcascade layer, with tiles replaced in place as blocks finish.
(async function () {
  "use strict";
  const mc = window.mapcascade;
  const viewer = await mc.openViewer("Leaflet");
  if (!viewer) return;
  const { status, info, tj } = viewer;

  const states = new mc.TileStates(status.setCounts);
  const tileImgs = new Map(); // "z/x/y" -> <img> on screen

  function keyOf(c) {
    return c.z + "/" + c.x + "/" + c.y;
  }

  // done: Leaflet's callback, called once for the first load only.
  function load(img, key, url, done) {
    states.set(key, "loading");
    mc.loadTileInto(img, url).then(
      function (state) {
        if (state) states.set(key, state); // null: a newer load of this tile took over
        if (done) done(null, img);
      },
      function (err) {
        states.set(key, "error");
        if (done) done(err, img);
      }
    );
  }

  const LiveTileLayer = L.TileLayer.extend({
    createTile: function (coords, done) {
      const img = document.createElement("img");
      img.alt = "";
      img.setAttribute("role", "presentation");
      const key = keyOf(coords);
      tileImgs.set(key, img);
      load(img, key, this.getTileUrl(coords), done);
      return img;
    },
  });

  const b = tj.bounds; // [west, south, east, north]
  const bounds = b ? L.latLngBounds([b[1], b[0]], [b[3], b[2]]) : null;
  const map = L.map("map", {
    minZoom: tj.minzoom,
    maxZoom: tj.maxzoom,
    // Some slack around the layer so its edges can be centred on screen.
    maxBounds: bounds ? bounds.pad(1) : null,
  });
  const layer = new LiveTileLayer(info.template, {
    minZoom: tj.minzoom,
    maxZoom: tj.maxzoom,
    bounds: bounds, // no requests for tiles outside the layer (they would 404)
    attribution: tj.attribution || "",
  });
  layer.on("tileunload", function (e) {
    const key = keyOf(e.coords);
    if (tileImgs.get(key) === e.tile) {
      tileImgs.delete(key);
      states.set(key, null);
    }
  });
  // The imagery under the map; the bar's slider fades the map to compare.
  const imagery = L.tileLayer(mc.imageryTemplate(info.layer), {
    minZoom: tj.minzoom,
    maxZoom: tj.maxzoom,
    bounds: bounds,
  });
  imagery.addTo(map);
  layer.addTo(map);
  L.control.scale({ metric: true, imperial: false }).addTo(map);
  mc.setupControls(info.layer, function (opacity) { layer.setOpacity(opacity); });

  const c = tj.center; // [lon, lat, zoom]
  if (c) map.setView([c[1], c[0]], c[2]);
  else if (bounds) map.fitBounds(bounds);
  else map.setView([0, 0], tj.minzoom || 0);

  const stats = mc.startLiveRefresh({
    layer: info.layer,
    states: states,
    status: status,
    onBlock: mc.debounced(function () { imagery.redraw(); }, 1000),
    reloadTile: function (key) {
      const img = tileImgs.get(key);
      if (!img) return;
      const zxy = key.split("/");
      load(img, key, mc.cacheBusted(mc.tileUrl(info.template, zxy[0], zxy[1], zxy[2])), null);
    },
  });

  window.mapcascadeViewer = {
    mapOpacity: function () { return layer.options.opacity; },
    map: map, layer: layer, imagery: imagery, states: states, stats: stats,
  };
})();
