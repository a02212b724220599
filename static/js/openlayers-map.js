// OpenLayers viewer of one mapcascade layer, with tiles replaced in place as blocks finish.
(async function () {
  "use strict";
  const mc = window.mapcascade;
  const viewer = await mc.openViewer("OpenLayers");
  if (!viewer) return;
  const { status, info, tj } = viewer;

  const states = new mc.TileStates(status.setCounts);
  const tiles = new Map(); // "z/x/y" -> ol ImageTile last loaded for it

  // First load: the tile's own <img>; OpenLayers marks the tile loaded on its load event.
  function tileLoadFunction(tile, src) {
    const key = tile.getTileCoord().join("/");
    tiles.set(key, tile);
    states.set(key, "loading");
    mc.loadTileInto(tile.getImage(), src, tile).then(
      function (state) {
        if (state) states.set(key, state);
      },
      function () {
        states.set(key, "error");
        tile.setState(ol.TileState.ERROR);
      }
    );
  }

  // Later loads decode into a new <img> and swap it in once complete, so the old image
  // stays on screen meanwhile and only this tile is redrawn (no source refresh).
  function reloadTile(key) {
    const tile = tiles.get(key);
    if (!tile) return;
    if (tile.disposed || !tile.getImage()) {
      tiles.delete(key);
      states.set(key, null);
      return;
    }
    const zxy = key.split("/");
    const img = new Image();
    states.set(key, "loading");
    mc.loadTileInto(img, mc.cacheBusted(mc.tileUrl(info.template, zxy[0], zxy[1], zxy[2])), tile)
      .then(
        function (state) {
          if (!state || tile.disposed) return;
          tile.setImage(img);
          states.set(key, state);
          map.render();
        },
        function () {
          states.set(key, "error");
        }
      );
  }

  const b = tj.bounds; // [west, south, east, north]
  const extent = b ? ol.proj.transformExtent(b, "EPSG:4326", "EPSG:3857") : undefined;
  const source = new ol.source.XYZ({
    url: info.template,
    attributions: tj.attribution || undefined,
    minZoom: tj.minzoom,
    maxZoom: tj.maxzoom,
    wrapX: false,
    tileLoadFunction: tileLoadFunction,
  });
  // The imagery under the map; the bar's slider fades the map to compare.
  const imagerySource = new ol.source.XYZ({
    url: mc.imageryTemplate(info.layer),
    minZoom: tj.minzoom,
    maxZoom: tj.maxzoom,
    wrapX: false,
  });
  const mapLayer = new ol.layer.Tile({ source: source, extent: extent });
  const c = tj.center || [0, 0, tj.minzoom || 0]; // [lon, lat, zoom]
  const map = new ol.Map({
    target: "map",
    // extent: no requests for tiles outside the layer (they would 404).
    layers: [new ol.layer.Tile({ source: imagerySource, extent: extent }), mapLayer],
    view: new ol.View({
      center: ol.proj.fromLonLat([c[0], c[1]]),
      zoom: c[2],
      minZoom: tj.minzoom,
      maxZoom: tj.maxzoom,
      extent: extent ? ol.extent.buffer(extent, ol.extent.getWidth(extent)) : undefined,
    }),
    controls: ol.control.defaults
      .defaults({ attributionOptions: { collapsible: false } })
      .extend([new ol.control.ScaleLine({ units: "metric" })]),
  });
  if (!tj.center && extent) map.getView().fit(extent);
  mc.setupControls(info.layer, function (opacity) { mapLayer.setOpacity(opacity); });

  const stats = mc.startLiveRefresh({
    layer: info.layer,
    states: states,
    status: status,
    onBlock: mc.debounced(function () { imagerySource.refresh(); }, 1000),
    reloadTile: reloadTile,
  });

  window.mapcascadeViewer = {
    mapOpacity: function () { return mapLayer.getOpacity(); },
    map: map, source: source, mapLayer: mapLayer, imagery: imagerySource, states: states,
    stats: stats,
  };
})();
