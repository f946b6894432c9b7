// The client's arithmetic, in Node (no browser): the gallery's tile sizes and the contrast kept
// for a tenant's colour.
import assert from "node:assert/strict";
import { test } from "node:test";

import { accessible, contrast } from "../operator/web/branding.js";
import { fit } from "../operator/web/layout.js";

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

test("the gallery's tiles all fit, and use the space", () => {
  const screens = [
    [1248, 640],
    [374, 700],
    [800, 360],
    [1900, 950],
  ];
  for (const [width, height] of screens) {
    for (let count = 1; count <= 25; count++) {
      const tile = fit(count, width, height, 12);
      assert.ok(tile.columns * tile.rows >= count, `${count} in ${width}x${height}: a place for each`);
      assert.ok(tile.columns * tile.width + (tile.columns - 1) * 12 <= width, `${count} in ${width}x${height}: as wide`);
      assert.ok(tile.rows * tile.height + (tile.rows - 1) * 12 <= height, `${count} in ${width}x${height}: as tall`);
      // Not needlessly small: the tiles cover a fair share of the space.
      const covered = (count * tile.width * tile.height) / (width * height);
      assert.ok(covered > 0.3, `${count} in ${width}x${height} cover ${covered.toFixed(2)}`);
    }
  }
  assert.deepEqual(fit(0, 800, 600, 12), { columns: 0, rows: 0, width: 0, height: 0 });
  // Wide tiles on a wide screen, taller ones for many people on an upright phone.
  const desktop = fit(6, 1248, 640, 12);
  assert.ok(desktop.width > desktop.height, "wide tiles on a wide screen");
  const phone = fit(6, 374, 700, 12);
  assert.equal(phone.columns, 2);
});

test("a tenant's colour keeps a contrast of 4.5:1, and keeps its hue", () => {
  for (const colour of ["#ffdd00", "#00ff00", "#ff9900", "#87ceeb", "#0b5cad", "#000000", "#ffffff"]) {
    const light = accessible(colour, "#000000", ["#ffffff", "#f6f7f9"]);
    assert.ok(contrast(rgb(light), rgb("#ffffff")) >= 4.5, `${colour} -> ${light} on white`);
    const dark = accessible(colour, "#ffffff", ["#121417", "#1c1f24"]);
    assert.ok(contrast(rgb(dark), rgb("#121417")) >= 4.5, `${colour} -> ${dark} on the dark page`);
  }
  // A colour that is already dark enough stays as it is.
  assert.equal(accessible("#0b5cad", "#000000", ["#ffffff"]), "#0b5cad");
  // Yellow becomes a darker yellow (an olive), not grey: red and green stay above blue.
  const [r, g, b] = rgb(accessible("#ffdd00", "#000000", ["#ffffff"]));
  assert.ok(r > b && g > b, `the hue is kept: ${r},${g},${b}`);
});
