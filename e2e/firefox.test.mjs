// The lobby with two browser engines: a Firefox page knocks, a moderator in Chromium lets it
// in, and each then decodes the other's video; a second Firefox page is declined.
//
// Firefox is Debian's `firefox-esr`, driven over WebDriver BiDi by puppeteer-core. Firefox
// pairs no ICE candidate with a loopback address, so the server runs on the host side of a
// test network (a veth pair into a namespace this test makes, see `testNetwork`) and announces
// that address for media; both browsers reach it locally. Firefox treats that origin as secure
// by a preference (Chromium by a flag), and every other request of Firefox goes to a proxy on
// a loopback port where nothing listens, so it contacts no host at all. Creating the namespace
// needs root, as CI has.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import puppeteer from "puppeteer-core";

import { ARTIFACTS, decodesAndHears, eventually, join, launchBrowser, requestedUrls, startTreffpunkt, testNetwork } from "./harness.mjs";

const FIREFOX = process.env.FIREFOX_PATH || "/usr/bin/firefox-esr";

const MANIFESTS = `
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata: {name: verein}
spec:
  displayName: Sportverein
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata: {name: sitzung, namespace: tenant-verein}
spec:
  access: Lobby
  moderatorPasswordSecretRef: {name: moderation, key: password}
---
apiVersion: v1
kind: Secret
metadata: {name: moderation, namespace: tenant-verein}
stringData: {password: Vorsitz}
`;

/** Firefox, headless, with a fake camera and microphone and no network but the test's. */
async function launchFirefox(secureHost) {
  return puppeteer.launch({
    browser: "firefox",
    executablePath: FIREFOX,
    headless: true,
    extraPrefsFirefox: {
      "media.navigator.streams.fake": true,
      "media.navigator.permission.disabled": true,
      "media.autoplay.default": 0,
      "media.autoplay.blocking_policy": 0,
      "dom.securecontext.allowlist": secureHost,
      // The allowlisted plain-HTTP origin counts as secure, so its own images would count as
      // mixed content and be asked for over HTTPS.
      "security.mixed_content.upgrade_display_content": false,
      "media.peerconnection.ice.obfuscate_host_addresses": false,
      "intl.accept_languages": "de-DE, de",
      // Everything not addressed to the test server goes to a proxy that is not there.
      "network.proxy.type": 1,
      "network.proxy.http": "127.0.0.1",
      "network.proxy.http_port": 9,
      "network.proxy.ssl": "127.0.0.1",
      "network.proxy.ssl_port": 9,
      "network.proxy.no_proxies_on": secureHost,
      "network.dns.disableIPv6": true,
      "network.dns.disablePrefetch": true,
      "network.prefetch-next": false,
      "network.connectivity-service.enabled": false,
      "network.captive-portal-service.enabled": false,
    },
  });
}

/** What a puppeteer page shows: whether the element is rendered and not hidden. */
function visible(page, selector) {
  return page.evaluate((s) => {
    const element = document.querySelector(s);
    return Boolean(element && element.checkVisibility());
  }, selector);
}

const text = (page, selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? "", selector);

/** Whether Firefox's page decodes video frames and receives audio packets between two samples. */
async function firefoxReceives(page) {
  const sample = () =>
    page.evaluate(async () => {
      const out = { frames: 0, audioPackets: 0 };
      const pc = window.treffpunkt.pc;
      if (!pc) return out;
      (await pc.getStats()).forEach((report) => {
        if (report.type !== "inbound-rtp") return;
        if (report.kind === "video") out.frames += report.framesDecoded || 0;
        if (report.kind === "audio") out.audioPackets += report.packetsReceived || 0;
      });
      return out;
    });
  const first = await sample();
  await new Promise((r) => setTimeout(r, 1500));
  const second = await sample();
  return second.frames > first.frames && second.audioPackets > first.audioPackets;
}

/** A Firefox page that opens `url` and knocks under `name`. */
async function knock(firefox, url, name) {
  const context = await firefox.createBrowserContext();
  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`[${name}] page error: ${error.message}`));
  page.on("request", (request) => requestedUrls.push(request.url()));
  page.on("requestfailed", (request) => console.log(`[${name}] failed: ${request.url()} ${request.failure()?.errorText}`));
  await page.goto(url);
  await page.waitForSelector("#display-name", { visible: true });
  await page.type("#display-name", name);
  await page.click("#join-button");
  return page;
}

describe("the lobby with Firefox and Chromium", () => {
  let network;
  let server;
  let chromium;
  let firefox;

  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-firefox-"));
    const manifests = path.join(dir, "verein.yaml");
    fs.writeFileSync(manifests, MANIFESTS);
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
    const ben = await knock(firefox, room, "Ben");
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

    const clara = await knock(firefox, room, "Clara");
    assert.ok(await eventually(() => visible(clara, "#waiting")), "Clara waits in Firefox");
    await anna.click("#knocking-list li:has-text('Clara') >> text=Ablehnen");
    assert.ok(await eventually(() => visible(clara, "#ended")), "Clara is declined");
    assert.match(await text(clara, "#ended-heading"), /nicht hereingelassen/);
    await anna.context().close();
  });
});
