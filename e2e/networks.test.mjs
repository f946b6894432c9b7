// Calls that get through a network that blocks UDP, as many schools, offices and public Wi-Fi
// networks do: the page falls back to ICE-TCP on its own; and through one that lets only HTTPS
// out, over a TURN server (Debian's coturn, which standalone mode starts with `--turn`) that
// relays media over TLS on port 443. A page on a line that loses packets gets them again. And
// standalone mode over HTTPS with a certificate it made itself, opened from another machine, as
// on a club's LAN.
//
// The blocked network is real: a network namespace joined to this host by a veth pair, with an
// nftables rule inside it that drops every UDP packet leaving it. The server runs on the host
// side of that pair; one Chromium runs on the host (UDP), another inside the namespace (TCP
// only). Creating the namespace needs root, as CI has; set TREFFPUNKT_SKIP_NETNS=1 to skip.

import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { firefoxReceives, joinFirefox, launchFirefoxIn } from "./firefox.mjs";
import { ARTIFACTS, decodesAndHears, eventually, join, launchBrowser, selectedCandidates, startTreffpunkt, testNetwork, watchAudioFrames } from "./harness.mjs";

/** The local candidate of the pair a page's connection uses, once chosen. */
async function localCandidateOf(page) {
  return (await selectedCandidates(page))?.local ?? null;
}

async function transportOf(page) {
  return (await localCandidateOf(page))?.protocol ?? null;
}

/** The base64 SHA-256 of a certificate's public key, for Chromium's list of trusted keys. */
function publicKeyHash(certificate) {
  return crypto.createHash("sha256").update(certificate.publicKey.export({ type: "spki", format: "der" })).digest("base64");
}

async function seesAndHears(page) {
  return eventually(async () => {
    const now = await decodesAndHears(page);
    return now.video && now.audio;
  }, 30000);
}

describe("a page on a network that blocks UDP", { skip: process.env.TREFFPUNKT_SKIP_NETNS === "1" && "TREFFPUNKT_SKIP_NETNS=1" }, () => {
  let network;
  let server;
  let browser;
  let blockedBrowser;

  before(async () => {
    network = testNetwork("tptcp", "10.231.11");
    network.dropUdp();
    server = await startTreffpunkt([], { host: network.hostIp });
    const origin = new URL(server.url).origin;
    browser = await launchBrowser({ secureOrigin: origin });
    blockedBrowser = await launchBrowser({ secureOrigin: origin, namespace: network.name });
  });

  after(async () => {
    await blockedBrowser?.close();
    await browser?.close();
    server?.child.kill("SIGKILL");
    network?.close();
  });

  test("joins over ICE-TCP; it and a page on UDP decode each other, and its sound has no gap over 300 ms in 30 s", async () => {
    const room = `${server.url}/public/schule`;
    const anna = await join(browser, room, "Anna");
    const tim = await join(blockedBrowser, room, "Tim", { initScript: watchAudioFrames });
    assert.ok(await seesAndHears(tim), "Tim, behind the firewall, sees and hears Anna");
    assert.ok(await seesAndHears(anna), "Anna sees and hears Tim");
    assert.equal(await transportOf(tim), "tcp", "Tim's connection runs over TCP");
    assert.equal(await transportOf(anna), "udp", "Anna's stays on UDP");

    const audio = await tim.evaluate(async () => {
      const gaps = window.treffpunktTest.audioGaps;
      for (const gap of gaps) gap.reset();
      await new Promise((r) => setTimeout(r, 30000));
      return { longestGapMs: Math.max(0, ...gaps.map((gap) => gap.longest)), frames: gaps.map((gap) => gap.frames) };
    });
    console.log(`over ICE-TCP: longest audio gap ${Math.round(audio.longestGapMs)} ms over ${audio.frames.join("+")} frames in 30 s`);
    assert.ok(audio.frames[0] >= 1200, `Anna's sound keeps coming over TCP: ${audio.frames.join("+")} of about 1500 frames`);
    assert.ok(audio.longestGapMs <= 300, `no gap in Tim's sound longer than 300 ms (longest ${Math.round(audio.longestGapMs)} ms)`);
    assert.ok((await decodesAndHears(tim)).video, "Tim still decodes Anna's video");
    await tim.screenshot({ path: path.join(ARTIFACTS, "ice-tcp.png") });
    await anna.context().close();
    await tim.context().close();
  });

  test("a Firefox page on that network joins over ICE-TCP as well", async () => {
    const firefox = await launchFirefoxIn(network, network.hostIp);
    try {
      const room = `${server.url}/public/schule-firefox`;
      const anna = await join(browser, room, "Anna");
      const fritz = await joinFirefox(firefox, room, "Fritz");
      assert.ok(await eventually(() => firefoxReceives(fritz), 30000), "Fritz, in Firefox behind the firewall, sees and hears Anna");
      assert.ok(await seesAndHears(anna), "Anna sees and hears Fritz");
      const protocol = await fritz.evaluate(async () => {
        const stats = await window.treffpunkt.pc.getStats();
        let pair = null;
        stats.forEach((report) => {
          if (report.type === "candidate-pair" && (report.selected || (report.nominated && report.state === "succeeded"))) pair = report;
        });
        return pair ? stats.get(pair.localCandidateId)?.protocol : null;
      });
      assert.equal(protocol, "tcp", "Fritz's connection runs over TCP");
      await anna.context().close();
    } finally {
      await firefox.close();
    }
  });
});

/** What a page's video has received: packets, those that were lost, NACKs and repairs. */
async function videoReceived(page) {
  return page.evaluate(async () => {
    const out = { packets: 0, lost: 0, nacks: 0, repairs: 0, frames: 0, plis: 0, freezes: 0, freezeMs: 0, dropped: 0 };
    (await window.treffpunkt.pc.getStats()).forEach((report) => {
      if (report.type !== "inbound-rtp" || report.kind !== "video") return;
      out.packets += report.packetsReceived || 0;
      out.lost += report.packetsLost || 0;
      out.nacks += report.nackCount || 0;
      out.repairs += report.retransmittedPacketsReceived || 0;
      out.frames += report.framesDecoded || 0;
      out.plis += report.pliCount || 0;
      out.freezes += report.freezeCount || 0;
      out.freezeMs += (report.totalFreezesDuration || 0) * 1000;
      out.dropped += report.framesDropped || 0;
    });
    return out;
  });
}

describe("a page on a line that loses packets", { skip: process.env.TREFFPUNKT_SKIP_NETNS === "1" && "TREFFPUNKT_SKIP_NETNS=1" }, () => {
  let network;
  let server;
  let browser;
  let lossyBrowser;

  before(async () => {
    network = testNetwork("tploss", "10.231.12");
    network.loseIncomingUdp(3);
    server = await startTreffpunkt([], { host: network.hostIp });
    const origin = new URL(server.url).origin;
    browser = await launchBrowser({ secureOrigin: origin });
    lossyBrowser = await launchBrowser({ secureOrigin: origin, namespace: network.name });
  });

  after(async () => {
    await lossyBrowser?.close();
    await browser?.close();
    server?.child.kill("SIGKILL");
    network?.close();
  });

  test("gets what its line lost again, as RTX, and its video goes on", async () => {
    const room = `${server.url}/public/funkloch`;
    const anna = await join(browser, room, "Anna");
    const lena = await join(lossyBrowser, room, "Lena");
    assert.ok(await seesAndHears(lena), "Lena, on the lossy line, sees and hears Anna");
    const start = await videoReceived(lena);
    await new Promise((r) => setTimeout(r, 15000));
    const end = await videoReceived(lena);
    const got = Object.fromEntries(Object.keys(end).map((key) => [key, end[key] - start[key]]));
    console.log(`on a line that loses 3 %: ${JSON.stringify(got)}`);
    assert.ok(got.frames > 150, `Lena's video goes on: ${got.frames} frames in 15 s`);
    assert.ok(got.lost > 0 && got.nacks > 0, `the line lost packets and Lena's browser asked for them: ${JSON.stringify(got)}`);
    // Chromium counts a packet that came as RTX as repaired, not as received: `packetsLost`
    // keeps the line's loss.
    assert.ok(got.repairs >= got.lost / 2, `most came again on the repair stream (RTX): ${got.repairs} for ${got.lost} lost`);
    await anna.context().close();
    await lena.context().close();
  });
});

describe("standalone over HTTPS with a certificate of its own", { skip: process.env.TREFFPUNKT_SKIP_NETNS === "1" && "TREFFPUNKT_SKIP_NETNS=1" }, () => {
  let network;
  let server;
  let browser;
  let certificate;

  before(async () => {
    // The browsers run in the namespace, another machine on the club's network; the server
    // announces its address on that network.
    network = testNetwork("tptls", "10.231.13");
    const state = fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-state-"));
    server = await startTreffpunkt(["--self-signed", "--state-dir", state], { host: network.hostIp });
    certificate = new crypto.X509Certificate(fs.readFileSync(path.join(state, "standalone-tls", "cert.pem")));
    // What a participant does who compared the fingerprint and accepted the certificate.
    browser = await launchBrowser({ namespace: network.name, trustKey: publicKeyHash(certificate), host: network.hostIp });
  });

  after(async () => {
    await browser?.close();
    server?.child.kill("SIGKILL");
    network?.close();
  });

  test("the page at the announced address is secure, camera and microphone work, and the call decodes", async () => {
    assert.match(server.url, new RegExp(`^https://${network.hostIp.replace(/\./g, "\\.")}:`), "the server says its HTTPS address");
    assert.ok(server.output().includes(certificate.fingerprint256), "the server prints the fingerprint browsers show");
    assert.match(server.output(), /Browser warnen/, "and explains the browser's warning in German");
    const room = `${server.url}/public/vereinsheim`;
    const anna = await join(browser, room, "Anna");
    const ben = await join(browser, room, "Ben", { locale: "en-US" });
    assert.equal(await anna.evaluate(() => window.isSecureContext), true, "a secure page, with no flag that makes it one");
    assert.ok(await seesAndHears(anna), "Anna sees and hears Ben");
    assert.ok(await seesAndHears(ben), "Ben sees and hears Anna");
    await anna.screenshot({ path: path.join(ARTIFACTS, "https-standalone.png") });
    await anna.context().close();
    await ben.context().close();
  });
});

describe("a page on a network that lets only HTTPS out", { skip: process.env.TREFFPUNKT_SKIP_NETNS === "1" && "TREFFPUNKT_SKIP_NETNS=1" }, () => {
  let network;
  let turnIp;
  let server;
  let browser;
  let httpsOnlyBrowser;

  before(async () => {
    network = testNetwork("tpturn", "10.231.15");
    network.onlyTcpPort(443);
    const state = fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-turn-"));
    turnIp = network.addHostAddress(3);
    // The web server on port 443 of one address, as behind an Ingress; media and coturn (on
    // port 443 too) on another. The media node's own ports are closed to the namespace.
    server = await startTreffpunkt(["--self-signed", "--state-dir", state, "--turn"], { host: network.hostIp, port: 443, announce: turnIp });
    const certificate = new crypto.X509Certificate(fs.readFileSync(path.join(state, "standalone-tls", "cert.pem")));
    const hosts = [network.hostIp, turnIp];
    browser = await launchBrowser({ trustKey: publicKeyHash(certificate), host: hosts });
    httpsOnlyBrowser = await launchBrowser({ namespace: network.name, trustKey: publicKeyHash(certificate), host: hosts });
  });

  after(async () => {
    await httpsOnlyBrowser?.close();
    await browser?.close();
    server?.child.kill("SIGKILL");
    network?.close();
  });

  test("relays its media over TURN/TLS on port 443; it and a page on UDP decode each other", async () => {
    const room = `${server.url}/public/rathaus`;
    const anna = await join(browser, room, "Anna");
    const tim = await join(httpsOnlyBrowser, room, "Tim");
    const timSees = await seesAndHears(tim);
    assert.ok(timSees, "Tim, behind the firewall, sees and hears Anna");
    assert.ok(await seesAndHears(anna), "Anna sees and hears Tim");
    const local = await localCandidateOf(tim);
    assert.equal(local?.candidateType, "relay", `Tim's connection goes through the TURN server: ${JSON.stringify(local)}`);
    assert.equal(local?.relayProtocol, "tls", "over TLS");
    assert.equal(local?.address, turnIp, "at the address of standalone's TURN server");
    assert.equal(await transportOf(anna), "udp", "Anna's stays on UDP");
    // The credentials came from the gateway, never a participant's name.
    const username = await tim.evaluate(() => window.treffpunkt.iceServers[0]?.username);
    assert.match(username, /^\d{10}:[0-9a-f]{16}$/);
    await tim.screenshot({ path: path.join(ARTIFACTS, "turn-tls.png") });
    await anna.context().close();
    await tim.context().close();
  });
});
