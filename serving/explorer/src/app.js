// etfuse explorer: the day's ET map (server-rendered overlay on a lon/lat frame), a point's series,
// an area mean over a drawn box.  Talks only to this API; libraries are served from /static/vendor.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { days: [], index: -1, legend: null, model: null, point: null, drawing: false };
  window.etfuse = state;                      // for the browser tests and the curious

  async function getJSON(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).slice(0, 200)}`);
    return r.json();
  }
  const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v) ? "-" : Number(v).toFixed(d));

  const map = L.map("map", { crs: L.CRS.EPSG4326, zoomSnap: 0.25, attributionControl: true, boxZoom: false });
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  let overlay = null, marker = null, box = null, plot = null;

  function graticule(b) {
    const style = { color: "#999", weight: 0.6, interactive: false };
    for (let lon = Math.ceil(b.west / 2) * 2; lon <= b.east; lon += 2) {
      L.polyline([[b.south - 1, lon], [b.north + 1, lon]], style).addTo(map);
      L.marker([b.south - 0.35, lon], { interactive: false, icon: L.divIcon({ className: "graticule-label",
        html: `${lon}&deg;E`, iconSize: [40, 12], iconAnchor: [14, 0] }) }).addTo(map);
    }
    for (let lat = Math.ceil(b.south / 2) * 2; lat <= b.north; lat += 2) {
      L.polyline([[lat, b.west - 1], [lat, b.east + 1]], style).addTo(map);
      L.marker([lat, b.west - 0.25], { interactive: false, icon: L.divIcon({ className: "graticule-label",
        html: `${lat}&deg;N`, iconSize: [40, 12], iconAnchor: [40, 6] }) }).addTo(map);
    }
  }

  function drawColorbar(legend) {
    $("cb-ramp").style.background = `linear-gradient(to right, ${legend.colours.join(", ")})`;
    $("cb-min").textContent = fmt(legend.vmin_mm, 0);
    $("cb-max").textContent = `${fmt(legend.vmax_mm, 0)}+`;
  }

  function showDay(i) {
    if (i < 0 || i >= state.days.length) return;
    state.index = i;
    const d = state.days[i];
    document.body.dataset.overlayLoaded = "false";
    document.body.dataset.day = d.date;
    $("day").value = d.date;
    $("slider").value = String(i);
    const badge = $("badge");
    badge.textContent = d.status;
    badge.className = `badge ${d.status}`;
    const url = `/overlay/${d.date}.png`;
    if (overlay) overlay.setUrl(url);
    else {
      const b = state.legend.bounds;
      overlay = L.imageOverlay(url, [[b.south, b.west], [b.north, b.east]], { opacity: 0.92, interactive: false })
        .addTo(map);
      overlay.on("load", () => { document.body.dataset.overlayLoaded = "true"; });
      overlay.on("error", () => { document.body.dataset.overlayLoaded = "error"; });
    }
    const champion = state.model && state.model.version !== null ? `; serving model now v${state.model.version}` : "";
    $("dayinfo").textContent = `${d.date} (00-24 UTC): ${d.status}, model v${d.model_version}, sources used: ` +
      `${d.sources_used.join(", ") || "none"}${champion}`;
    loadArea(null);
  }

  function dayIndex(date) {
    let best = -1;
    state.days.forEach((d, k) => { if (d.date <= date) best = k; });
    return best < 0 ? 0 : best;
  }

  async function loadSeries(latlng) {
    const first = state.days[0].date, last = state.days[state.days.length - 1].date;
    const q = `lat=${latlng.lat.toFixed(4)}&lon=${latlng.lng.toFixed(4)}&start=${first}&end=${last}`;
    $("pointinfo").textContent = "loading the series...";
    let body;
    try { body = await getJSON(`/timeseries?${q}`); }
    catch (err) { $("pointinfo").textContent = String(err); return; }
    state.point = body;
    if (marker) marker.setLatLng(latlng); else marker = L.circleMarker(latlng, { radius: 5, color: "#d00" }).addTo(map);
    const vals = body.values;
    const xs = vals.map((v) => Date.parse(v.date) / 1000);
    const ys = vals.map((v) => (v.et_mm === null ? null : v.et_mm));
    const data = [xs, ys];
    const series = [{}, { label: "ET [mm/day]", stroke: "#1f77b4", width: 1.5, points: { show: vals.length < 60 } }];
    const bands = [];
    // the 90 % interval (et_q05_mm .. et_q95_mm), on the days whose model gave one (null on the others: a gap)
    const q05 = vals.map((v) => (v.et_q05_mm === undefined ? null : v.et_q05_mm));
    const q95 = vals.map((v) => (v.et_q95_mm === undefined ? null : v.et_q95_mm));
    const banded = q05.filter((v, k) => v !== null && q95[k] !== null).length;
    if (banded) {
      data.push(q05, q95);
      series.push({ label: "5 %", stroke: "#9cc3e6", width: 1 }, { label: "95 %", stroke: "#9cc3e6", width: 1 });
      bands.push({ series: [3, 2], fill: "rgba(31,119,180,0.22)" });
    }
    document.body.dataset.seriesBand = String(banded);
    const width = Math.max(300, $("chart").clientWidth || 420);
    if (plot) plot.destroy();
    plot = new uPlot({ width, height: 260, series, bands, scales: { x: { time: true } },
      axes: [{}, { label: "ET [mm day-1]" }] }, data, $("chart"));
    const finite = ys.filter((y) => y !== null);
    const mean = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
    $("pointinfo").textContent = `cell ${body.cell_lat.toFixed(3)} N, ${body.cell_lon.toFixed(3)} E: ${vals.length} days, ` +
      `mean ${fmt(mean)} mm/day, last ${fmt(ys[ys.length - 1])} mm` +
      (banded ? `; shaded: 90 % interval (${banded} of ${vals.length} days; days of older models have none)` : "");
    document.body.dataset.seriesPoints = String(vals.length);
    const h = state.legend.resolution_deg * 0.4;
    const box = `west=${(body.cell_lon - h).toFixed(4)}&south=${(body.cell_lat - h).toFixed(4)}` +
      `&east=${(body.cell_lon + h).toFixed(4)}&north=${(body.cell_lat + h).toFixed(4)}`;
    $("downloads").innerHTML = `Download: <a id="dl-csv" href="/timeseries?${q}&format=csv">CSV</a> &middot; ` +
      `<a id="dl-nc" href="/subset.nc?${box}&start=${first}&end=${last}">NetCDF</a>`;
  }

  async function loadArea(bounds) {
    if (bounds) state.box = bounds;
    if (!state.box) return;
    const b = state.box, d = state.days[state.index].date;
    const q = `west=${b.getWest().toFixed(3)}&south=${b.getSouth().toFixed(3)}&east=${b.getEast().toFixed(3)}` +
      `&north=${b.getNorth().toFixed(3)}&date=${d}`;
    try {
      const a = await getJSON(`/area?${q}`);
      $("areainfo").textContent = `Box ${a.bbox.map((v) => v.toFixed(2)).join(", ")} on ${a.date}: mean ${fmt(a.mean_mm)} mm, ` +
        `min ${fmt(a.min_mm)}, max ${fmt(a.max_mm)}, ${a.valid_cells} of ${a.cells} cells with a value`;
      document.body.dataset.areaMean = String(a.mean_mm);
    } catch (err) { $("areainfo").textContent = String(err); }
  }

  // -- drawing a box: press the button, then drag on the map
  let start = null;
  $("drawbox").addEventListener("click", () => {
    state.drawing = !state.drawing;
    $("drawbox").classList.toggle("active", state.drawing);
    if (state.drawing) map.dragging.disable(); else map.dragging.enable();
  });
  map.on("mousedown", (e) => {
    if (!state.drawing) return;
    e.originalEvent.preventDefault();          // no text/image selection while dragging the box
    start = e.latlng;
  });
  map.on("mousemove", (e) => {
    if (!state.drawing || !start) return;
    const bounds = L.latLngBounds(start, e.latlng);
    if (box) box.setBounds(bounds); else box = L.rectangle(bounds, { color: "#d00", weight: 1.5, fill: false }).addTo(map);
  });
  map.on("mouseup", (e) => {
    if (!state.drawing || !start) return;
    const bounds = L.latLngBounds(start, e.latlng);
    start = null;
    state.drawing = false;
    state.justDrew = true;
    $("drawbox").classList.remove("active");
    map.dragging.enable();
    if (box) box.setBounds(bounds); else box = L.rectangle(bounds, { color: "#d00", weight: 1.5, fill: false }).addTo(map);
    loadArea(bounds);
  });
  map.on("click", (e) => {
    if (state.justDrew) { state.justDrew = false; return; }   // the click that ends a box drag
    if (!state.drawing) loadSeries(e.latlng);
  });

  $("slider").addEventListener("input", (e) => showDay(Number(e.target.value)));
  $("day").addEventListener("change", (e) => showDay(dayIndex(e.target.value)));
  $("prev").addEventListener("click", () => showDay(state.index - 1));
  $("next").addEventListener("click", () => showDay(state.index + 1));

  async function start_app() {
    try {
      const [legend, days, outline] = await Promise.all([getJSON("/legend"), getJSON("/days"), getJSON("/outline.geojson")]);
      state.legend = legend;
      state.days = days;
      try { state.model = await getJSON("/model"); } catch (err) { state.model = null; }
      const b = legend.bounds;
      map.fitBounds([[b.south, b.west], [b.north, b.east]]);
      graticule(b);
      L.rectangle([[b.south, b.west], [b.north, b.east]], { color: "#555", weight: 0.8, fill: false, dashArray: "4 3",
        interactive: false }).addTo(map);
      L.geoJSON(outline, { style: { color: "#111", weight: 1.6, fill: false }, interactive: false }).addTo(map);
      drawColorbar(legend);
      if (!days.length) { $("dayinfo").textContent = "No product day yet."; document.body.dataset.ready = "empty"; return; }
      $("slider").max = String(days.length - 1);
      $("day").min = days[0].date;
      $("day").max = days[days.length - 1].date;
      showDay(days.length - 1);
      document.body.dataset.ready = "true";
    } catch (err) {
      $("dayinfo").textContent = `The explorer could not start: ${err}`;
      document.body.dataset.ready = "error";
    }
  }
  start_app();
})();
