// Shared by the Leaflet, OpenLayers and MapLibre pages: TileJSON loading, tile fetching
// that knows whether a tile is still being generated, and the live "block ready" feed.
// Every URL is relative to the page so the viewer works behind a proxy prefix.
(function (global) {
  "use strict";

  // Tiles still pending after this long are re-fetched even without an event
  // (an event can be missed while the EventSource reconnects).
  const PENDING_RETRY_MS = 20000;

  function layerFromQuery() {
    return new URLSearchParams(global.location.search).get("layer");
  }

  // TileJSON of ?layer=NAME, else of the default layer.
  async function loadTileJSON() {
    const layer = layerFromQuery();
    const url = new URL(layer ? encodeURIComponent(layer) + "/tiles.json" : "tiles.json",
      global.location.href);
    const res = await fetch(url);
    if (!res.ok) throw new Error("GET " + url.pathname + " -> " + res.status);
    const tj = await res.json();
    // Resolve the template against the TileJSON URL (it may be relative), keeping the
    // {z}/{x}/{y} placeholders that URL() percent-encodes.
    const template = new URL(tj.tiles[0], url).href.replace(/%7B/gi, "{").replace(/%7D/gi, "}");
    return { tj: tj, template: template, layer: layer || tj.name };
  }

  // The imagery a layer's tiles were drawn from, stored beside them (404 until generated).
  function imageryTemplate(layer) {
    const url = new URL("imagery/" + encodeURIComponent(layer) + "/{z}/{x}/{y}.png",
      global.location.href);
    return url.href.replace(/%7B/gi, "{").replace(/%7D/gi, "}");
  }

  // The bar's controls: a layer switcher (opens the same viewer on ?layer=NAME) and the
  // map's opacity over its imagery, the first thing a mapper checks. onOpacity(0..1).
  async function setupControls(current, onOpacity) {
    const select = document.getElementById("layer");
    const res = await fetch("layers");
    if (res.ok) {
      (await res.json()).layers.forEach(function (tj) {
        const option = document.createElement("option");
        option.value = tj.name;
        option.textContent = tj.description || tj.name;
        option.selected = tj.name === current;
        select.appendChild(option);
      });
    }
    select.addEventListener("change", function () {
      const query = new URLSearchParams(global.location.search);
      query.set("layer", select.value);
      global.location.search = query.toString();
    });
    const slider = document.getElementById("opacity");
    const apply = function () { onOpacity(Number(slider.value) / 100); };
    slider.addEventListener("input", apply);
    apply();
  }

  // Calls fn at most once per `ms`, after the last call (block events come in bursts).
  function debounced(fn, ms) {
    let timer = null;
    return function () {
      if (timer) global.clearTimeout(timer);
      timer = global.setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  function tileUrl(template, z, x, y) {
    return template.replace("{z}", z).replace("{x}", x).replace("{y}", y);
  }

  function cacheBusted(url) {
    return url + (url.indexOf("?") < 0 ? "?" : "&") + "v=" + Date.now();
  }

  // State of the tiles on screen, by "z/x/y": "loading", "pending" (an interim
  // image is shown), "error" or "final". Only final tiles are not worth reloading.
  class TileStates {
    constructor(onChange) {
      this.states = new Map();
      this.pendingSince = new Map();
      this.onChange = onChange; // gets {pending, loading, total}
    }
    set(key, state) {
      if (state === null) this.states.delete(key);
      else this.states.set(key, state);
      if (state === "pending") {
        if (!this.pendingSince.has(key)) this.pendingSince.set(key, Date.now());
      } else if (state !== "loading") {
        this.pendingSince.delete(key);
      }
      let loading = 0;
      this.states.forEach(function (s) { if (s === "loading") loading += 1; });
      this.onChange({ pending: this.pendingSince.size, loading: loading, total: this.states.size });
    }
    unfinished(key) {
      const s = this.states.get(key);
      return s !== undefined && s !== "final";
    }
    pending() {
      return Array.from(this.pendingSince.keys());
    }
    // Keys pending for longer than PENDING_RETRY_MS (their timer restarts).
    stale() {
      const now = Date.now();
      const out = [];
      for (const [key, since] of this.pendingSince) {
        if (now - since > PENDING_RETRY_MS) {
          this.pendingSince.set(key, now);
          out.push(key);
        }
      }
      return out;
    }
  }

  // Fetches a tile: resolves to {state: "pending" or "final", blob}. fetch() rather
  // than img.src so that X-Tile-Status is visible; the HTTP cache applies all the same.
  async function fetchTile(url, signal) {
    const res = await fetch(url, { signal: signal });
    if (!res.ok) throw new Error("tile " + res.status);
    const state = res.headers.get("X-Tile-Status") === "pending" ? "pending" : "final";
    return { state: state, blob: await res.blob() };
  }

  // Fetches a tile into an <img> and resolves to "pending" or "final", or to null
  // when a newer load for the same owner (the <img>, or the map's tile object)
  // superseded this one.
  async function loadTileInto(img, url, owner) {
    owner = owner || img;
    const token = (owner.mcLoad = (owner.mcLoad || 0) + 1);
    const { state, blob } = await fetchTile(url);
    if (token !== owner.mcLoad) return null;
    const blobUrl = URL.createObjectURL(blob);
    try {
      // Listeners rather than onload: a superseded load still settles (on the
      // next load event), so its blob URL is revoked.
      await new Promise(function (resolve, reject) {
        img.addEventListener("load", resolve, { once: true });
        img.addEventListener("error", reject, { once: true });
        img.src = blobUrl;
      });
    } finally {
      URL.revokeObjectURL(blobUrl);
    }
    return token === owner.mcLoad ? state : null;
  }

  // Subscribes to `events` and calls onBlock(layer, [[z, x, y], ...]) for every
  // block that was generated. onReconnect runs after the feed comes back, since
  // events sent while it was down are lost.
  function subscribeBlocks(onBlock, onReconnect, setFeedState) {
    if (!global.EventSource) {
      setFeedState("no live updates (EventSource unsupported)");
      return null;
    }
    const source = new EventSource("events");
    let opened = false;
    source.addEventListener("open", function () {
      setFeedState("live");
      if (opened) onReconnect();
      opened = true;
    });
    source.addEventListener("error", function () {
      setFeedState("reconnecting");
    });
    source.addEventListener("block", function (ev) {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        console.warn("bad block event", ev.data);
        return;
      }
      onBlock(msg.layer, msg.tiles || []);
    });
    return source;
  }

  // The one-line status under the map: "3 tiles generating · live".
  function statusLine(el) {
    let counts = { pending: 0, loading: 0, total: 0 };
    let feed = "connecting";
    function render() {
      const n = counts.pending;
      const tiles = n > 0 ? n + (n === 1 ? " tile generating" : " tiles generating")
        : counts.loading > 0 ? "loading tiles"
        : counts.total > 0 ? "all tiles final" : "no tiles in view";
      el.textContent = tiles + " · " + feed;
      el.dataset.pending = String(n);
    }
    render();
    return {
      setCounts: function (c) { counts = c; render(); },
      setFeed: function (s) { feed = s; render(); },
      error: function (msg) { el.textContent = msg; el.classList.add("error"); },
    };
  }

  // The start every viewer shares: its status line and the layer's TileJSON, the page titled
  // after the layer. Resolves to { status, info, tj }, or null (error shown) without TileJSON.
  async function openViewer(viewerName) {
    const status = statusLine(document.getElementById("status"));
    let info;
    try {
      info = await loadTileJSON();
    } catch (err) {
      status.error("Cannot load tiles.json: " + err.message);
      return null;
    }
    const tj = info.tj;
    document.title = (tj.description || tj.name || "mapcascade") + " · " + viewerName;
    return { status: status, info: info, tj: tj };
  }

  // Starts the live refresh for one map. The page supplies its TileStates and
  // reloadTile(key), which re-fetches the tile "z/x/y" (cache-busted) if on screen.
  // Returns counters (block events seen, tiles reloaded by event or by retry).
  function startLiveRefresh(opts) {
    const states = opts.states;
    const stats = { events: 0, eventReloads: 0, retryReloads: 0 };
    function reload(keys, counter) {
      keys.forEach(function (key) {
        if (!states.unfinished(key)) return;
        stats[counter] += 1;
        opts.reloadTile(key);
      });
    }
    subscribeBlocks(
      function (layer, tiles) {
        // Without a known layer name (default layer, no id in TileJSON) accept all:
        // only tiles not yet final are reloaded, so a stray event costs little.
        if (opts.layer && layer !== opts.layer) return;
        stats.events += 1;
        if (opts.onBlock) opts.onBlock(tiles);
        reload(tiles.map(function (t) { return t[0] + "/" + t[1] + "/" + t[2]; }), "eventReloads");
      },
      function () { reload(states.pending(), "retryReloads"); },
      opts.status.setFeed
    );
    global.setInterval(function () { reload(states.stale(), "retryReloads"); }, 5000);
    return stats;
  }

  global.mapcascade = {
    loadTileJSON: loadTileJSON,
    tileUrl: tileUrl,
    cacheBusted: cacheBusted,
    fetchTile: fetchTile,
    loadTileInto: loadTileInto,
    TileStates: TileStates,
    statusLine: statusLine,
    openViewer: openViewer,
    startLiveRefresh: startLiveRefresh,
    imageryTemplate: imageryTemplate,
    setupControls: setupControls,
    debounced: debounced,
  };
})(window);

// Links between the viewers keep ?layer=.
document.querySelectorAll("#bar a").forEach(function (a) {
  a.search = window.location.search;
});
