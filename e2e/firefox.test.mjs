// The lobby with two browser engines: a Firefox page knocks, a moderator in Chromium lets it
// in, and each then decodes the other's video; a second Firefox page is declined.
//
// Firefox is Debian's `firefox-esr` (see `firefox.mjs`). Firefox pairs no ICE candidate with a
// loopback address, so the server runs on the host side of a test network (a veth pair into a
// namespace this test makes, see `testNetwork`) and announces that address for media; both
// browsers reach it locally. Creating the namespace needs root, as CI has.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { firefoxReceives, joinFirefox, launchFirefox } from "./firefox.mjs";
import { ARTIFACTS, clubManifests, decodesAndHears, eventually, join, launchBrowser, startTreffpunkt, testNetwork } from "./harness.mjs";


/** What a puppeteer page shows: whether the element is rendered and not hidden. */
function visible(page, selector) {
  return page.evaluate((s) => {
    const element = document.querySelector(s);
    return Boolean(element && element.checkVisibility());
  }, selector);
}

const text = (page, selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? "", selector);

describe("the lobby with Firefox and Chromium", () => {
  let network;
  let server;
  let chromium;
  let firefox;

  before(async () => {
    const manifests = clubManifests();
    network = testNetwork("tpfox", "10.231.9");
    server = await startTreffpunkt(["--manifests", manifests], { host: network.hostIp });
    chromium = await launchBrowser({ secureOrigin: server.url });
    firefox = await launchFirefox(network.hostIp);
  });

  after(async () => {
    await firefox?.close();
    await chromium?.close();
    server?.child.kill("SIGKILL");
    network?.close();
  });

  test("a Firefox page knocks, is let in by a moderator in Chromium, and both see each other", async () => {
    const room = `${server.url}/verein/sitzung`;
    const ben = await joinFirefox(firefox, room, "Ben");
    assert.ok(await eventually(() => visible(ben, "#waiting")), "Ben waits in Firefox");
    assert.match(await text(ben, "#waiting-text"), /Noch ist niemand da/);

    const anna = await join(chromium, room, "Anna", { skipJoin: true });
    await anna.click("#moderator-toggle");
    await anna.fill("#room-password", "Vorsitz");
    await anna.click("#join-button");
    assert.ok(await eventually(() => anna.isVisible("#call")), "the chair comes in with the moderators' password");
    assert.ok(
      await eventually(async () => /Moderation ist informiert/.test(await text(ben, "#waiting-text"))),
      `Ben's waiting screen says that a moderator is there (${await text(ben, "#waiting-text")})`,
    );
    await anna.click("#call-people");
    await anna.click("#knocking-list li:has-text('Ben') >> text=Hereinlassen");
    assert.ok(await eventually(() => visible(ben, "#call")), "Ben is let in");

    assert.ok(await eventually(() => firefoxReceives(ben), 30000), "Firefox decodes Anna's video and receives her sound");
    assert.ok(
      await eventually(async () => {
        const now = await decodesAndHears(anna);
        return now.video && now.audio;
      }, 30000),
      "Chromium decodes Ben's video from Firefox and hears him",
    );
    await ben.screenshot({ path: path.join(ARTIFACTS, "firefox-call.png") });
    const broken = await ben.evaluate(() =>
      [...document.images].filter((image) => image.checkVisibility() && !(image.complete && image.naturalWidth > 0)).map((image) => image.id),
    );
    assert.deepEqual(broken, [], "every image shown in Firefox has loaded");

    const clara = await joinFirefox(firefox, room, "Clara");
    assert.ok(await eventually(() => visible(clara, "#waiting")), "Clara waits in Firefox");
    await anna.click("#knocking-list li:has-text('Clara') >> text=Ablehnen");
    assert.ok(await eventually(() => visible(clara, "#ended")), "Clara is declined");
    assert.match(await text(clara, "#ended-heading"), /nicht hereingelassen/);
    await anna.context().close();
  });
});
