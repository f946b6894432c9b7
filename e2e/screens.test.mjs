// Every screen as people see it, on a desktop (1280x800) and a phone (390x844): a call of six
// fits the gallery with every video decoding; axe-core finds no serious or critical violation
// on the start page, the pre-join screen, the lobby's waiting screen, a call of three, the chat,
// the participant list and the call's dialogs, in German and in English; and a screenshot of
// each screen at both sizes is kept in e2e/artifacts/.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

import {
  accessibilityViolations,
  ARTIFACTS,
  clubManifests,
  eventually,
  join,
  launchBrowser,
  mediaDiagnosis,
  standaloneWithBrowser,
} from "./harness.mjs";


const manifests = clubManifests('branding: {primaryColor: "#ffdd00"}');
fs.mkdirSync(ARTIFACTS, { recursive: true });

const VIEWPORTS = {
  desktop: { width: 1280, height: 800 },
  phone: { width: 390, height: 844 },
};

/**
 * Where each remote camera's video of `page` is and whether it decodes: inside the window and
 * above the buttons, its name shown too, and its frame count growing.
 */
async function remoteVideos(page) {
  return page.evaluate(async () => {
    const bar = document.getElementById("callbar").getBoundingClientRect();
    const tiles = [...document.querySelectorAll('.tile[data-kind="camera"]:not([data-participant="self"])')];
    const videos = tiles.map((tile) => tile.querySelector("video"));
    const before = videos.map((video) => video.getVideoPlaybackQuality().totalVideoFrames);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const inside = (rect) =>
      rect.width > 40 && rect.left >= 0 && rect.top >= 0 && rect.right <= innerWidth + 0.5 && rect.bottom <= bar.top + 0.5;
    return tiles.map((tile, i) => ({
      name: tile.querySelector(".name span").textContent,
      paused: window.treffpunkt.participants.get(tile.dataset.participant)?.paused.camera ?? "playing",
      frames: videos[i].getVideoPlaybackQuality().totalVideoFrames,
      size: `${videos[i].videoWidth}x${videos[i].videoHeight}`,
      visible: inside(videos[i].getBoundingClientRect()) && inside(tile.querySelector(".name").getBoundingClientRect()),
      decoding: videos[i].videoWidth > 0 && videos[i].getVideoPlaybackQuality().totalVideoFrames > before[i],
    }));
  });
}

/** Whether `page` shows `selector` within a while. */
const shows = (page, selector, ms = 20000) => eventually(async () => page.isVisible(selector), ms);

async function snap(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

describe("the screens", () => {
  const running = standaloneWithBrowser(["--manifests", manifests]);

  test("a call of six: the gallery fits every tile on a desktop and a phone, every video decoding", async () => {
    const { server } = running;
    const room = `${server.url}/public/sechs`;
    // Six browsers with real cameras are more than two cores carry at full speed: the cameras
    // run at 10 frames a second, and the four others, whose screens are not checked, receive
    // sound only (as on a weak line) and play nothing.
    const browser = await launchBrowser({ fps: 10 });
    const extras = await launchBrowser({ fps: 5, mute: true });
    try {
      const desktop = await join(browser, room, "Anna", { viewport: VIEWPORTS.desktop });
      const phone = await join(browser, room, "Ben", { viewport: VIEWPORTS.phone });
      const pages = { Anna: desktop, Ben: phone };
      for (const name of ["Cem", "Dana", "Emil", "Fritz"]) {
        const page = await join(extras, room, name, { viewport: { width: 640, height: 400 } });
        pages[name] = page;
        assert.ok(await eventually(async () => page.evaluate(() => window.treffpunkt.joined), 30000), `${name} is in`);
        await page.evaluate(() => window.treffpunkt.ws.send(JSON.stringify({ type: "receive-settings", audioOnly: true })));
      }
      for (const [page, label] of [
        [desktop, "desktop"],
        [phone, "phone"],
      ]) {
        const seen = await eventually(async () => {
          const videos = await remoteVideos(page);
          return videos.length === 5 && videos.every((v) => v.visible && v.decoding) ? videos : null;
        }, 90000);
        if (!seen) {
          // What each page's media connection came to, for a failure that does not repeat.
          for (const [name, other] of Object.entries(pages)) console.log(`[${name}] ${JSON.stringify(await mediaDiagnosis(other))}`);
        }
        assert.ok(seen, `on the ${label}, all five others are inside the window and decoding: ${JSON.stringify(await remoteVideos(page))}`);
        const scrolls = await page.evaluate(() => document.documentElement.scrollHeight > innerHeight + 1);
        assert.equal(scrolls, false, `the ${label} page does not scroll`);
        const self = await page.evaluate(() => {
          const rect = document.querySelector('.tile[data-participant="self"]').getBoundingClientRect();
          return rect.bottom <= document.getElementById("callbar").getBoundingClientRect().top + 0.5 && rect.top >= 0;
        });
        assert.ok(self, `on the ${label}, the own tile is inside the window too`);
        await snap(page, `call-of-six-${label}`);
      }
      // The phone's buttons take one short row.
      const bar = await phone.evaluate(() => document.getElementById("callbar").getBoundingClientRect().height);
      assert.ok(bar < 100, `the phone's button bar is ${bar} px tall`);

      // The speaker view: one tile large, the others in a strip, all still inside the window.
      await desktop.click("#call-more");
      await desktop.click("#call-view");
      const large = await eventually(async () =>
        desktop.evaluate(() => {
          const tiles = [...document.querySelectorAll("#grid .tile")].map((t) => t.getBoundingClientRect());
          const bar = document.getElementById("callbar").getBoundingClientRect();
          const first = tiles[0];
          return (
            document.getElementById("grid").classList.contains("speaker-view") &&
            tiles.slice(1).every((t) => t.width < first.width / 2 && t.bottom <= bar.top + 0.5)
          );
        }),
      );
      assert.ok(large, "the speaker view shows one tile large and the others small");
      await snap(desktop, "speaker-view-desktop");
    } finally {
      await extras.close();
      await browser.close();
    }
  });

  for (const [language, locale] of [
    ["de", "de-DE"],
    ["en", "en-US"],
  ]) {
    for (const [size, viewport] of Object.entries(VIEWPORTS)) {
      test(`every screen in ${language} on a ${size}: no serious accessibility violation, and a screenshot`, async () => {
        const { server, browser } = running;
        const found = [];
        const check = async (page, screen) => {
          for (const violation of await accessibilityViolations(page)) found.push(`${screen}: ${violation}`);
          await snap(page, `${screen}-${language}-${size}`);
        };
        const room = `${server.url}/verein/sitzung`;
        const options = { locale, viewport };

        const context = await browser.newContext({ locale, viewport, permissions: ["camera", "microphone"] });
        const start = await context.newPage();
        await start.goto(server.url + "/");
        await check(start, "start");
        await start.goto(server.url + "/verein");
        await check(start, "tenant-start");
        await start.goto(server.url + "/keine-seite/gibt/es");
        await check(start, "not-found");
        await context.close();

        const chair = await join(browser, room, "Vorsitz", { ...options, skipJoin: true });
        const pages = [chair];
        try {
          await eventually(async () => (await chair.$$("#mic-select option")).length > 0);
          await check(chair, "pre-join");
          await chair.click("#moderator-toggle");
          await chair.fill("#room-password", "Vorsitz");
          await chair.click("#join-button");
          assert.ok(await shows(chair, "#call"), "the chair is in");

          const guest = await join(browser, room, "Gast", options);
          pages.push(guest);
          assert.ok(await shows(guest, "#waiting"), "the guest waits");
          await check(guest, "waiting");
          await chair.click("#call-people");
          await chair.click("#knocking-list li:has-text('Gast') >> .primary");
          assert.ok(await shows(guest, "#call"), "the guest is let in");

          const third = await join(browser, room, "Dritte", { ...options, skipJoin: true });
          pages.push(third);
          await third.click("#moderator-toggle");
          await third.fill("#room-password", "Vorsitz");
          await third.click("#join-button");
          assert.ok(await shows(third, "#call"));
          assert.ok(
            await eventually(async () => (await remoteVideos(guest)).filter((v) => v.decoding).length === 2, 30000),
            "the guest sees both others",
          );
          await check(guest, "call");
          await check(chair, "participants-moderator");

          await third.click("#call-chat");
          await third.fill("#chat-input", "Guten Abend!");
          await third.press("#chat-input", "Enter");
          await guest.click("#call-chat");
          assert.ok(await eventually(async () => (await guest.textContent("#chat-log")).includes("Guten Abend!")));
          await check(guest, "chat");
          await guest.click("#call-chat");

          await guest.click("#call-people");
          await check(guest, "participants");
          await guest.click("#call-people");

          await guest.click("#call-more");
          await check(guest, "more");
          await guest.click("#call-devices");
          assert.ok(await shows(guest, "#devices-dialog"));
          await check(guest, "devices");
          await guest.click("#devices-dialog .primary");
          assert.ok(await eventually(async () => !(await guest.isVisible("#devices-dialog"))), "the dialog closes");
          await guest.locator("body").press("?");
          assert.ok(await shows(guest, "#help-dialog"), "? opens the shortcuts");
          await check(guest, "shortcuts");
          await guest.click("#help-close");

          await guest.click("#leave");
          assert.ok(await shows(guest, "#ended"));
          await check(guest, "ended");
        } finally {
          for (const page of pages) await page.context().close();
        }
        assert.deepEqual(found, []);
      });
    }
  }
});
