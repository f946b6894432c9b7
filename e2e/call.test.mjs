// A video call in headless Chromium through Treffpunkt's own media node, in standalone mode.
//
// A page counts as seeing and hearing the other only when its WebRTC statistics say so:
// inbound video `framesDecoded` and inbound audio `totalSamplesReceived` grow between two
// samples.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  ARTIFACTS,
  decodesAndHears,
  eventually,
  freePort,
  join,
  launchBrowser,
  requestedUrls,
  standaloneWithBrowser,
  startMediaNode,
  startTreffpunkt,
  watchDecoding,
} from "./harness.mjs";

fs.mkdirSync(ARTIFACTS, { recursive: true });

async function tileNames(page) {
  return page.$$eval(".tile .name > span:first-child", (spans) => spans.map((span) => span.textContent));
}

async function bothWays(a, b) {
  return eventually(async () => {
    const [x, y] = await Promise.all([decodesAndHears(a), decodesAndHears(b)]);
    return x.video && x.audio && y.video && y.audio;
  }, 30000);
}

describe("a call in the browser", () => {
  const running = standaloneWithBrowser();

  test("two pages see and hear each other, and go on when a third comes and goes", async () => {
    const { server, browser } = running;
    const room = `${server.url}/public/familie`;
    const anna = await join(browser, room, "Anna", { locale: "de-DE" });
    const ben = await join(browser, room, "Ben", { locale: "en-US" });
    assert.ok(await bothWays(anna, ben), "Anna and Ben decode each other's video and hear each other");

    assert.deepEqual(await tileNames(anna), ["Anna (Sie)", "Ben"], "Anna's grid names both");
    assert.deepEqual(await tileNames(ben), ["Ben (You)", "Anna"], "Ben's grid is in English");
    assert.equal(await anna.textContent("#leave"), "Verlassen");
    assert.equal(await ben.textContent("#leave"), "Leave");

    const cem = await join(browser, room, "Cem", { locale: "de-DE" });
    const cemReceivesBoth = await eventually(async () => {
      const stats = await decodesAndHears(cem);
      return stats.video && stats.audio && stats.second.videoTracks >= 2 ? stats : null;
    }, 30000);
    assert.ok(cemReceivesBoth, "the third page receives the first two");
    assert.ok((await tileNames(anna)).includes("Cem"), "Anna sees Cem's tile");

    await cem.click("#leave");
    assert.ok(
      await eventually(async () => !(await tileNames(anna)).includes("Cem"), 10000),
      "Cem's tile goes when Cem leaves",
    );
    assert.equal(await anna.textContent("#notice"), "Cem hat das Treffen verlassen.");
    assert.ok(
      await eventually(async () => (await anna.textContent("#announce")) === "Cem hat das Treffen verlassen.", 2000),
      "and screen readers are told, through a live region that was there all along",
    );
    assert.equal(await anna.getAttribute("#announce", "aria-live"), "polite");
    assert.ok(await bothWays(anna, ben), "Anna and Ben still decode each other after Cem left");

    // Someone who closes the tab leaves too, at once: only a connection that breaks off is kept
    // for a while (15 s), in case its page comes back.
    const dora = await join(browser, room, "Dora", { locale: "de-DE" });
    assert.ok(await eventually(async () => (await tileNames(anna)).includes("Dora"), 10000), "Anna sees Dora's tile");
    await dora.close();
    assert.ok(
      await eventually(async () => !(await tileNames(anna)).includes("Dora"), 5000),
      "Dora's tile goes within 5 s of her closing the tab",
    );

    await anna.screenshot({ path: path.join(ARTIFACTS, "call.png") });
    await ben.click("#leave");
    assert.equal(await ben.textContent("#ended-heading"), "You have left the meeting.");
    await anna.context().close();
    await ben.context().close();
    await cem.context().close();
    await dora.context().close();
  });

  test("a browser that prefers H.264 is forwarded in H.264", async () => {
    const { server, browser } = running;
    const preferH264 = () => {
      const addTransceiver = RTCPeerConnection.prototype.addTransceiver;
      RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
        const transceiver = addTransceiver.call(this, trackOrKind, init);
        const kind = typeof trackOrKind === "string" ? trackOrKind : trackOrKind.kind;
        if (kind === "video") {
          const codecs = RTCRtpSender.getCapabilities("video").codecs;
          const h264 = codecs.filter((c) => c.mimeType === "video/H264");
          transceiver.setCodecPreferences([...h264, ...codecs.filter((c) => c.mimeType !== "video/H264")]);
        }
        return transceiver;
      };
    };
    const room = `${server.url}/public/h264`;
    const pages = [];
    for (const name of ["Hanna", "Hugo"]) {
      const context = await browser.newContext({ permissions: ["camera", "microphone"] });
      await context.addInitScript(preferH264);
      const page = await context.newPage();
      await page.goto(room);
      await page.fill("#display-name", name);
      await page.click("#join-button");
      pages.push(page);
    }
    assert.ok(await bothWays(pages[0], pages[1]), "both decode each other");
    const codecs = await pages[1].evaluate(async () => {
      const stats = await window.treffpunkt.pc.getStats();
      const mimeTypes = [];
      stats.forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "video") mimeTypes.push(stats.get(r.codecId)?.mimeType);
      });
      return mimeTypes;
    });
    assert.deepEqual(codecs, ["video/H264"]);
    for (const page of pages) await page.context().close();
  });

  test("muting is shown to the others", async () => {
    const { server, browser } = running;
    const room = `${server.url}/public/stumm`;
    const anna = await join(browser, room, "Anna");
    const ben = await join(browser, room, "Ben");
    await eventually(async () => (await tileNames(ben)).includes("Anna"));
    await anna.click("#call-mic");
    assert.equal(await anna.getAttribute("#call-mic", "aria-pressed"), "false", "the button shows the microphone off");
    assert.equal(await anna.getAttribute("#call-mic", "title"), "Mikrofon einschalten (Taste M)");
    const badge = '.tile[data-participant]:not([data-participant="self"]) .badge';
    assert.ok(
      await eventually(async () => ben.$eval(badge, (el) => !el.hidden), 10000),
      "Ben sees that Anna is muted",
    );
    await anna.click("#call-cam");
    assert.ok(
      await eventually(async () => ben.$eval('.tile[data-participant]:not([data-participant="self"])', (el) => el.classList.contains("video-off")), 10000),
      "Ben sees that Anna's camera is off",
    );
    await anna.context().close();
    await ben.context().close();
  });

  test("the client contacts no host but the server it came from", async () => {
    const { server, browser } = running;
    assert.ok(requestedUrls.length > 10, "the calls above made requests");
    const own = new URL(server.url).host;
    const foreign = requestedUrls.filter((url) => !url.startsWith("data:") && new URL(url).host !== own);
    assert.deepEqual(foreign, []);
  });

  test("the landing page opens a room from a typed name", async () => {
    const { server, browser } = running;
    const context = await browser.newContext({ locale: "de-DE" });
    const page = await context.newPage();
    await page.goto(server.url + "/");
    await page.fill("#room-name", "Skatclub Mittwoch");
    await page.click("#landing-form button");
    await page.waitForURL(/\/public\/skatclub-mittwoch$/);
    assert.equal(await page.textContent("#join-button"), "Beitreten");
    await context.close();
  });
});

describe("plain messages when something is wrong", () => {
  let server;
  let browser;

  before(async () => {
    server = await startTreffpunkt(["--max-participants-per-room", "2"]);
    // Without the fake prompt, each context's permissions decide.
    browser = await launchBrowser({ grantDevices: false });
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGKILL");
  });

  test("a denied camera and microphone are explained, and one can still join and listen", async () => {
    const room = `${server.url}/public/ohne-kamera`;
    const listener = await join(browser, room, "Lea", { permissions: [] });
    const notice = await eventually(async () => listener.textContent("#device-notice"), 10000);
    assert.match(notice, /Kamera und Mikrofon sind nicht freigegeben/);
    assert.ok(await eventually(async () => listener.isVisible("#call")), "she joins anyway");
    const speaker = await join(browser, room, "Sam");
    assert.ok(
      await eventually(async () => (await decodesAndHears(listener)).video, 30000),
      "the listener sees the speaker",
    );
    await listener.context().close();
    await speaker.context().close();
  });

  test("a full room says so", async () => {
    const room = `${server.url}/public/voll`;
    const first = await join(browser, room, "Eins", { permissions: [] });
    const second = await join(browser, room, "Zwei", { permissions: [] });
    await eventually(async () => (await tileNames(second)).length === 2);
    const third = await join(browser, room, "Drei", { locale: "en-US", permissions: [] });
    assert.ok(
      await eventually(async () => /This room is full/.test(await third.textContent("#notice")), 10000),
      "the third person is told the room is full",
    );
    assert.equal(await third.isVisible("#lobby"), true, "and stays in the lobby");
    for (const page of [first, second, third]) await page.context().close();
  });

  test("a dropped connection is explained", async () => {
    const room = `${server.url}/public/abbruch`;
    const page = await join(browser, room, "Uli", { permissions: [] });
    assert.ok(await eventually(async () => page.isVisible("#call")), "Uli is in the call");
    server.child.kill("SIGKILL");
    // The page keeps the call and tries to get the connection back, and says so.
    const told = await eventually(
      async () => /Die Verbindung ist gestört/.test(await page.textContent("#notice")),
      10000,
    );
    const log = await page.evaluate(() => window.treffpunkt.log);
    assert.ok(told, `the page says the connection is disturbed: ${JSON.stringify(log)}`);
    assert.ok(await eventually(async () => (await page.evaluate(() => window.treffpunkt.log)).some((l) => l.endsWith("resume")), 5000));
    await page.context().close();
  });
});

describe("a call survives its media node", () => {
  let server;
  let browser;
  let nodes;
  let grpc;
  const grantKey = "a shared secret for the browser test and long enough";

  before(async () => {
    grpc = `127.0.0.1:${await freePort()}`;
    server = await startTreffpunkt(["--external-media-nodes", "--grpc-listen", grpc], { env: { TREFFPUNKT_GRANT_KEY: grantKey } });
    nodes = [await startMediaNode(grpc, grantKey, "node-a"), await startMediaNode(grpc, grantKey, "node-b")];
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    for (const node of nodes ?? []) node.child.kill("SIGKILL");
    server?.child.kill("SIGKILL");
  });

  test("when the hosting node is killed, both pages decode each other again without a reload", async () => {
    const room = `${server.url}/public/ausfall`;
    const anna = await join(browser, room, "Anna");
    const ben = await join(browser, room, "Ben");
    assert.ok(await bothWays(anna, ben), "Anna and Ben are in a call");
    // A mark in each page: a reload would lose it.
    const before = await Promise.all(
      [anna, ben].map((page) => page.evaluate(() => ((window.stillTheSamePage = true), window.treffpunkt.log.length))),
    );
    const host = await eventually(async () => {
      for (const node of nodes) if ((await node.status())?.participants > 0) return node;
      return null;
    });
    assert.ok(host, "one node hosts the call");
    const statuses = await Promise.all(nodes.map((node) => node.status()));
    host.child.kill("SIGKILL");
    // First the pages notice and move (until then the frames already on their way still decode,
    // so decoding alone does not show the move), then they decode each other again.
    for (const [index, page] of [anna, ben].entries()) {
      const moved = await eventually(async () => {
        const log = await page.evaluate(() => window.treffpunkt.log);
        return log.slice(before[index]).some((entry) => entry.endsWith(" reconnect")) ? log : null;
      });
      const log = moved ?? (await page.evaluate(() => window.treffpunkt.log));
      assert.ok(moved, `the page moved: ${JSON.stringify({ log, statuses, killed: host.id })}`);
      assert.equal(await page.evaluate(() => window.stillTheSamePage), true, "no reload");
    }
    assert.ok(await bothWays(anna, ben), "both decode each other again");
    const other = nodes.find((node) => node !== host);
    assert.ok((await other.status()).participants >= 2, "the call is on the other node now");
    await anna.context().close();
    await ben.context().close();
  });

  test("when the hosting node stops, it drains: both pages move and never stop decoding for 3 s", async () => {
    nodes.push(await startMediaNode(grpc, grantKey, "node-c"));
    const live = nodes.filter((node) => node.child.exitCode === null && node.child.signalCode === null);
    const room = `${server.url}/public/umzug`;
    const anna = await join(browser, room, "Anna");
    const ben = await join(browser, room, "Ben");
    assert.ok(await bothWays(anna, ben), "Anna and Ben are in a call");
    const host = await eventually(async () => {
      for (const node of live) if ((await node.status())?.participants > 0) return node;
      return null;
    });
    assert.ok(host, "one node hosts the call");
    const other = live.find((node) => node !== host);
    const gaps = await Promise.all([anna, ben].map(watchDecoding));
    // A node told to stop (as Kubernetes does when it scales in) moves its calls first.
    host.child.kill("SIGTERM");
    const moved = await eventually(async () => (await other.status())?.participants >= 2, 30000);
    assert.ok(moved, "the call moved to the other node");
    assert.ok(await bothWays(anna, ben), "both decode each other after the move");
    const longest = (await Promise.all(gaps.map((gap) => gap()))).map((watch) => watch.longest);
    assert.ok(
      longest.every((ms) => ms < 3000),
      `no page went without new video for 3 s: longest gaps ${longest.join(" ms, ")} ms`,
    );
    await anna.context().close();
    await ben.context().close();
  });
});
