// How the call's tiles share the window.
//
// The gallery gives every tile the same size, the largest at which all of them fit into the
// space between the bar at the top and the buttons at the bottom: on a wide screen in rows of
// wide tiles, on a phone held upright in columns of taller ones. The speaker view (and the
// gallery, while someone shares a screen or a tile is pinned) shows one tile large and the
// others in a strip below it. The person speaking is outlined in both.

/** Shapes a tile may take (width / height), the usual one first; the taller ones only in an
 * upright window, such as a phone's. */
const WIDE_SHAPES = [16 / 9, 4 / 3];
const UPRIGHT_SHAPES = [16 / 9, 4 / 3, 1, 3 / 4];

/** How much larger another shape's tiles must be before the usual wide one gives way. */
const SHAPE_PREFERENCE = 1.25;

/**
 * The largest equal tiles `count` tiles can have in `width` x `height` pixels with `gap` pixels
 * between them, trying each shape in `shapes`: `{ columns, rows, width, height }` (whole
 * pixels). Wide tiles are kept unless another shape makes them clearly larger.
 */
export function fit(count, width, height, gap, shapes = height > width ? UPRIGHT_SHAPES : WIDE_SHAPES) {
  const none = { columns: 0, rows: 0, width: 0, height: 0 };
  if (count <= 0 || width <= 0 || height <= 0) return none;
  let best = none;
  let bestArea = 0;
  shapes.forEach((shape, index) => {
    for (let columns = 1; columns <= count; columns++) {
      const rows = Math.ceil(count / columns);
      const tileWidth = Math.floor(
        Math.min((width - gap * (columns - 1)) / columns, ((height - gap * (rows - 1)) / rows) * shape),
      );
      if (tileWidth <= 0) continue;
      const tileHeight = Math.floor(tileWidth / shape);
      const area = tileWidth * tileHeight * (index === 0 ? SHAPE_PREFERENCE : 1);
      if (area > bestArea) {
        bestArea = area;
        best = { columns, rows, width: tileWidth, height: tileHeight };
      }
    }
  });
  return best;
}

/** The gap between tiles, as in the style sheet (0.75rem). */
function gapOf(grid) {
  return parseFloat(getComputedStyle(grid).columnGap) || 12;
}

function size(item, width, height) {
  item.style.width = `${width}px`;
  item.style.height = `${height}px`;
}

/**
 * Sizes the tiles of `grid`. `featured` is the tile shown large, or null for the gallery.
 * Hidden tiles (a screen share that ended) take no space.
 */
export function arrange(grid, featured) {
  const tiles = [...grid.children].filter((item) => !item.hidden);
  const width = grid.clientWidth;
  const height = grid.clientHeight;
  const gap = gapOf(grid);
  grid.classList.toggle("speaker-view", Boolean(featured));
  for (const item of tiles) item.style.marginInline = "";
  if (!featured || !tiles.includes(featured)) {
    const tile = fit(tiles.length, width, height, gap);
    for (const item of tiles) size(item, tile.width, tile.height);
    return;
  }
  const others = tiles.filter((item) => item !== featured);
  // The strip takes about a fifth of the height, between 90 and 160 pixels.
  const strip = others.length ? Math.round(Math.min(160, Math.max(90, height * 0.2))) : 0;
  const large = fit(1, width, height - strip - (strip ? gap : 0), gap, [16 / 9]);
  size(featured, large.width, large.height);
  // The large tile has its line to itself.
  featured.style.marginInline = `${Math.max(0, Math.floor((width - large.width) / 2))}px`;
  const small = fit(others.length, width, strip, gap, [16 / 9]);
  for (const item of others) size(item, small.width, small.height);
}
