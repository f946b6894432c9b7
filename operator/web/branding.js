// A tenant's look on its pages: its title and logo in the bar, and its colour for buttons and
// outlines. Whatever colour a tenant chose, text on it and it on the page keep a contrast of at
// least 4.5:1 (WCAG AA): a colour too light for the light scheme is darkened until it has, one
// too dark for the dark scheme lightened, keeping its hue.

const $ = (id) => document.getElementById(id);

const MINIMUM_CONTRAST = 4.5;

function channels(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

function hexOf(rgb) {
  return `#${rgb.map((c) => Math.round(c).toString(16).padStart(2, "0")).join("")}`;
}

/** The relative luminance of an sRGB colour (WCAG 2). */
function luminance(rgb) {
  const [r, g, b] = rgb.map((c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** The contrast ratio of two sRGB colours (WCAG 2). */
export function contrast(a, b) {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

/**
 * `hex` mixed toward `toward` (black or white) just enough that it keeps `MINIMUM_CONTRAST`
 * against every colour of `against`.
 */
export function accessible(hex, toward, against) {
  const start = channels(hex);
  const target = channels(toward);
  for (let step = 0; step <= 100; step++) {
    const mixed = start.map((c, i) => c + ((target[i] - c) * step) / 100);
    const rounded = channels(hexOf(mixed));
    if (against.every((other) => contrast(rounded, channels(other)) >= MINIMUM_CONTRAST)) return hexOf(rounded);
  }
  return toward;
}

/**
 * Reads how `tenant` looks and shows it. Resolves with what the server said, `null` when there
 * is no such tenant, or `undefined` when the server cannot say.
 */
export async function applyBranding(tenant) {
  let look = null;
  try {
    const response = await fetch(`/api/v1/tenants/${encodeURIComponent(tenant)}`);
    if (response.ok) look = await response.json();
    else if (response.status !== 404) return undefined;
  } catch {
    return undefined;
  }
  if (!look) return null;
  const title = look.title || look.displayName;
  if (title) $("brand-title").textContent = title;
  if (look.logo) {
    const logo = $("brand-logo");
    logo.src = look.logo;
    logo.alt = "";
    logo.hidden = false;
    $("brand-icon").hidden = true;
  }
  if (look.primaryColor && /^#[0-9a-fA-F]{6}$/.test(look.primaryColor)) {
    const root = document.documentElement.style;
    // Light scheme: white text on the colour, the colour on the white and grey page.
    root.setProperty("--accent-light", accessible(look.primaryColor, "#000000", ["#ffffff", "#f6f7f9"]));
    // Dark scheme: dark text on the colour, the colour on the dark page.
    root.setProperty("--accent-dark", accessible(look.primaryColor, "#ffffff", ["#0b1520", "#121417", "#1c1f24"]));
  }
  return look;
}
