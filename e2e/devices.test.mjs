// The pre-join screen and the call's own controls as people use them: choosing a microphone
// with its level shown, a permission denied and then given without reloading, the keyboard
// shortcuts (and switching them off), the browser's validation messages in the page's
// language, a tenant's colour and logo kept readable, and the start pages of the city and of a
// tenant.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { decodesAndHears, eventually, join, launchBrowser, standaloneWithBrowser, startTreffpunkt } from "./harness.mjs";

// A one-pixel PNG as the tenant's logo.
const LOGO =
  "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

const MANIFESTS = `
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata: {name: baeckerei}
spec:
  displayName: Bäckerei Korn
  policy: {adhocRooms: false}
  branding: {title: "Bäckerei Korn – Treffen", primaryColor: "#ffdd00", logo: "${LOGO}"}
`;

const manifests = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-devices-")), "tenants.yaml");
fs.writeFileSync(manifests, MANIFESTS);

const shows = (page, selector, ms = 20000) => eventually(async () => page.isVisible(selector), ms);

/** The contrast ratio of two CSS colours `rgb(r, g, b)` (WCAG 2). */
function contrast(a, b) {
  const lum = (css) => {
    const [r, g, bl] = css.match(/\d+/g).slice(0, 3).map((c) => {
      const s = Number(c) / 255;
      return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

describe("devices, shortcuts and pages", () => {
  const running = standaloneWithBrowser(["--manifests", manifests]);

  test("the microphone's level shows before joining, and another microphone is used at once in the call", async () => {
    const { server, browser } = running;
    const room = `${server.url}/public/geraete`;
    const anna = await join(browser, room, "Anna", { skipJoin: true });
    const options = await eventually(async () => {
      const found = await anna.$$eval("#mic-select option", (list) => list.map((o) => ({ value: o.value, label: o.textContent })));
      return found.length > 0 ? found : null;
    });
    assert.ok(options, "the microphones are listed");
    assert.ok(options.every((o) => o.label.trim()), "each by its name");
    assert.ok((await anna.$$("#camera-select option")).length > 0, "the cameras are listed");
    assert.ok(
      await eventually(async () => (await anna.evaluate(() => window.treffpunkt.micLevel ?? 0)) > 0.01, 10000),
      "the meter shows the microphone's level",
    );
    await anna.click("#lobby-mic");
    assert.ok(
      await eventually(async () => (await anna.$eval("#mic-level", (m) => m.value)) === 0, 5000),
      "a switched-off microphone shows no level",
    );
    await anna.click("#lobby-mic");
    await anna.click("#join-button");
    const ben = await join(browser, room, "Ben");
    assert.ok(await eventually(async () => (await decodesAndHears(ben)).audio, 30000), "Ben hears Anna");

    // In the call: the devices dialog, another microphone; Ben goes on hearing her.
    await anna.click("#call-more");
    await anna.click("#call-devices");
    assert.ok(await shows(anna, "#devices-dialog"));
    const before = await anna.evaluate(() => window.treffpunkt.stream.getAudioTracks()[0].id);
    const other = options.length > 1 ? options[1].value : options[0].value;
    await anna.selectOption("#mic-select", other);
    assert.ok(
      await eventually(async () => (await anna.evaluate(() => window.treffpunkt.stream.getAudioTracks()[0].id)) !== before, 10000),
      "a new microphone track is in use",
    );
    const sent = await anna.evaluate(() => {
      const sender = window.treffpunkt.transceivers.audio.sender;
      return sender.track?.id === window.treffpunkt.stream.getAudioTracks()[0].id;
    });
    assert.ok(sent, "and it is the one sent to the others");
    await anna.keyboard.press("Escape");
    assert.ok(
      await eventually(async () => anna.evaluate(() => document.activeElement?.id === "call-more"), 5000),
      "the focus goes back to the menu's button, not to the hidden menu item",
    );
    assert.ok(await eventually(async () => (await decodesAndHears(ben)).audio, 10000), "Ben still hears Anna");
    for (const page of [anna, ben]) await page.context().close();
  });

  test("keyboard shortcuts mute, raise the hand and open their help; they can be switched off", async () => {
    const { server, browser } = running;
    const room = `${server.url}/public/tasten`;
    const anna = await join(browser, room, "Anna", { locale: "en-US" });
    const ben = await join(browser, room, "Ben");
    assert.ok(await shows(anna, "#call"));
    await eventually(async () => (await anna.$$('.tile[data-participant]:not([data-participant="self"])')).length === 1);
    await anna.locator("body").press("m");
    assert.equal(await anna.getAttribute("#call-mic", "aria-pressed"), "false", "M switches the microphone off");
    assert.ok(
      await eventually(async () => ben.isVisible('.tile:has-text("Anna") .badge:not(.hand)')),
      "Ben sees Anna muted",
    );
    await anna.locator("body").press("h");
    assert.ok(
      await eventually(async () => (await ben.textContent('.tile:has-text("Anna") .hand')) === "Hand 1"),
      "H raises the hand, seen by Ben",
    );
    await anna.locator("body").press("m");
    assert.equal(await anna.getAttribute("#call-mic", "aria-pressed"), "true", "M switches it on again");
    // Typing in the chat is typing, not a shortcut.
    await anna.click("#call-chat");
    await anna.type("#chat-input", "mmh");
    assert.equal(await anna.getAttribute("#call-mic", "aria-pressed"), "true", "an m in the chat mutes nothing");
    await anna.click("#call-chat");
    await anna.locator("body").press("?");
    assert.ok(await shows(anna, "#help-dialog"), "? opens the list of shortcuts");
    assert.match(await anna.textContent("#help-dialog"), /Switch the microphone on or off/);
    await anna.uncheck("#shortcuts-enabled");
    await anna.click("#help-close");
    await anna.locator("body").press("m");
    assert.equal(await anna.getAttribute("#call-mic", "aria-pressed"), "true", "switched off, M does nothing");
    for (const page of [anna, ben]) await page.context().close();
  });

  test("the browser's own messages for an empty field are in the page's language", async () => {
    const { server, browser } = running;
    for (const [locale, roomText, nameText] of [
      ["de-DE", "Bitte geben Sie einen Namen für den Raum ein.", "Bitte geben Sie Ihren Namen ein."],
      ["en-US", "Please enter a name for the room.", "Please enter your name."],
    ]) {
      const context = await browser.newContext({ locale, permissions: ["camera", "microphone"] });
      const page = await context.newPage();
      await page.goto(server.url + "/");
      await page.click("#landing-form button");
      assert.equal(await page.$eval("#room-name", (input) => input.validationMessage), roomText);
      await page.goto(server.url + "/public/leer");
      await page.fill("#display-name", "");
      await page.click("#join-button");
      assert.equal(await page.$eval("#display-name", (input) => input.validationMessage), nameText);
      assert.equal(await page.isVisible("#lobby"), true, "nobody joins without a name");
      await context.close();
    }
  });

  test("a tenant's start page shows its title, logo and colour, with the contrast kept", async () => {
    const { server, browser } = running;
    const context = await browser.newContext({ locale: "de-DE" });
    const page = await context.newPage();
    await page.goto(server.url + "/baeckerei");
    assert.ok(await eventually(async () => (await page.textContent("#brand-title")) === "Bäckerei Korn – Treffen"));
    assert.equal(await page.isVisible("#brand-logo"), true, "the logo is shown");
    assert.equal(await page.getAttribute("#brand-logo", "src"), LOGO);
    assert.equal(await page.isVisible("#room-name-admins"), true, "the page says that its admins make the rooms");
    const colours = await page.$eval("#landing-form .primary", (button) => {
      const style = getComputedStyle(button);
      return { background: style.backgroundColor, text: style.color };
    });
    assert.notEqual(colours.background, "rgb(11, 92, 173)", "the tenant's colour, not Treffpunkt's blue");
    const ratio = contrast(colours.background, colours.text);
    assert.ok(ratio >= 4.5, `the button's text has a contrast of ${ratio.toFixed(2)}:1`);
    await page.fill("#room-name", "Backstube");
    await page.click("#landing-form .primary");
    await page.waitForURL(/\/baeckerei\/backstube$/);

    // The city's own public space has a start page of its own too; a tenant that does not
    // exist is a page that says so.
    const publicPage = await page.goto(server.url + "/public");
    assert.equal(publicPage.status(), 200);
    assert.equal(await page.isVisible("#landing"), true);
    const missing = await page.goto(server.url + "/gibt-es-nicht");
    assert.equal(missing.status(), 404);
    assert.match(await page.textContent("h1"), /Diese Seite gibt es nicht/);
    assert.equal(await page.getAttribute("a[href='/']", "href"), "/", "and leads to the start page");
    await context.close();
  });
});

describe("a permission denied, then given", () => {
  let server;
  let browser;

  before(async () => {
    server = await startTreffpunkt();
    // Without the fake prompt, each context's permissions decide.
    browser = await launchBrowser({ grantDevices: false });
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGKILL");
  });

  test("camera and microphone come back without reloading the page", async () => {
    const room = `${server.url}/public/erlaubnis`;
    const lea = await join(browser, room, "Lea", { permissions: [], skipJoin: true });
    const refused = await eventually(async () => {
      const text = await lea.textContent("#device-notice-text");
      return /nicht freigegeben/.test(text) && text;
    }, 10000);
    assert.match(refused || "(no notice)", /nicht freigegeben/);
    assert.equal(await lea.isEnabled("#lobby-mic"), true, "the buttons stay usable");
    const reloads = [];
    lea.on("framenavigated", () => reloads.push(Date.now()));

    // Chromium tells the page that the permission changed, and the page may recover by itself
    // before anyone clicks "Try again"; either way, no reload.
    await lea.context().grantPermissions(["camera", "microphone"]);
    await lea.click("#retry-devices", { timeout: 3000 }).catch(() => {});
    assert.ok(
      await eventually(async () =>
        lea.evaluate(() => window.treffpunkt.stream?.getAudioTracks().length === 1 && window.treffpunkt.stream?.getVideoTracks().length === 1),
      ),
      "the page has the camera and the microphone now",
    );
    assert.equal(await lea.isVisible("#device-notice"), false, "the notice is gone");
    assert.deepEqual(reloads, [], "the page was not reloaded");
    await lea.click("#join-button");
    const sam = await join(browser, room, "Sam", { permissions: [] });
    const seen = await eventually(async () => {
      const now = await decodesAndHears(sam);
      return now.video && now.audio;
    }, 30000);
    assert.ok(seen, "Sam sees and hears Lea");
    for (const page of [lea, sam]) await page.context().close();
  });
});
