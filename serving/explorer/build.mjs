// Build the explorer bundle: our sources plus Leaflet and uPlot from node_modules into dist/.
// No bundler: the libraries ship browser builds; the API serves dist/ at / and /static/.
import { cpSync, mkdirSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const mod = (p) => join(here, "node_modules", p);
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "vendor", "images"), { recursive: true });
const copies = [
  [mod("leaflet/dist/leaflet.js"), "vendor/leaflet.js"],
  [mod("leaflet/dist/leaflet.css"), "vendor/leaflet.css"],
  [mod("uplot/dist/uPlot.iife.min.js"), "vendor/uPlot.iife.min.js"],
  [mod("uplot/dist/uPlot.min.css"), "vendor/uPlot.min.css"],
  [join(here, "src", "index.html"), "index.html"],
  [join(here, "src", "app.js"), "app.js"],
  [join(here, "src", "style.css"), "style.css"],
];
for (const [from, to] of copies) cpSync(from, join(dist, to));
cpSync(mod("leaflet/dist/images"), join(dist, "vendor", "images"), { recursive: true });
const versions = Object.fromEntries(["leaflet", "uplot"].map(
  (n) => [n, JSON.parse(readFileSync(mod(`${n}/package.json`), "utf8")).version]));
writeFileSync(join(dist, "build.json"), JSON.stringify({ built: new Date().toISOString(), versions }, null, 1));
console.log(`explorer built into ${dist}:`, versions);
