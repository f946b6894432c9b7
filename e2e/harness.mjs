// Shared pieces of the browser tests: start Treffpunkt in standalone mode, launch Debian's
// Chromium with a fake camera and microphone, join rooms, and read WebRTC statistics.
//
// Nothing here downloads a browser: playwright-core drives /usr/bin/chromium. The flags keep
// Chromium off every network but loopback (no DNS lookups of Google hosts, no mDNS).

import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

export const ARTIFACTS = path.join(path.dirname(new URL(import.meta.url).pathname), "artifacts");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

const BASE_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

/** Every host name resolves to nothing but loopback (and test networks' addresses). */
function resolverRules(extraHosts) {
  const excluded = ["localhost", "127.0.0.1", ...[extraHosts].flat().filter(Boolean)];
  return `--host-resolver-rules=MAP * ~NOTFOUND , ${excluded.map((host) => `EXCLUDE ${host}`).join(" , ")}`;
}

/** Playwright's own --disable-features list; Chromium keeps only the last such switch. */
function playwrightDisabledFeatures() {
  const bundle = createRequire(import.meta.url).resolve("playwright-core/lib/coreBundle");
  const match = /disabledFeatures = \[([\s\S]*?)\]\.filter\(Boolean\)/.exec(fs.readFileSync(bundle, "utf8"));
  if (!match) throw new Error("playwright-core changed: cannot find its disabledFeatures list");
  return [...match[1].matchAll(/^\s*"([^"]+)",?\s*$/gm)].map((m) => m[1]);
}

/**
 * Chromium, headless. `grantDevices: true` answers every camera and microphone prompt with yes
 * (the fake devices, and a fake screen for screen sharing); otherwise each context decides
 * through its permissions. `secureOrigin` lets a page served over plain HTTP from an address
 * other than loopback use the camera (a test network's address). `namespace` runs the browser
 * inside that network namespace. `camera: "grainy"` replaces the fake camera's simple picture,
 * which an encoder squeezes into a fraction of its bitrate, with one that costs what a real
 * webcam's does (see `grainyCamera`). `fps` sets the fake camera's frame rate and `mute`
 * silences what the pages play, so that a test with many pages fits on two cores.
 * `trustKey` (the base64 SHA-256 of a certificate's public key) makes Chromium trust that
 * certificate, as a participant does who accepted it, for pages at `host` (an address, or a
 * list of them: every address the pages reach besides loopback).
 */
export async function launchBrowser({
  grantDevices = true,
  secureOrigin = null,
  namespace = null,
  camera = null,
  fps = null,
  mute = false,
  trustKey = null,
  host = null,
} = {}) {
  const own = playwrightDisabledFeatures();
  return chromium.launch({
    executablePath: namespace ? chromiumInNamespace(namespace) : CHROMIUM,
    headless: true,
    ignoreDefaultArgs: ["--disable-features=" + own.join(",")],
    args: [
      fps ? `--use-fake-device-for-media-stream=fps=${fps}` : "--use-fake-device-for-media-stream",
      ...(mute ? ["--mute-audio"] : []),
      ...BASE_ARGS,
      resolverRules(secureOrigin ? new URL(secureOrigin).hostname : host),
      ...(trustKey ? [`--ignore-certificate-errors-spki-list=${trustKey}`] : []),
      ...(grantDevices ? ["--use-fake-ui-for-media-stream"] : []),
      ...(secureOrigin ? [`--unsafely-treat-insecure-origin-as-secure=${secureOrigin}`] : []),
      ...(camera === "grainy" ? [`--use-file-for-fake-video-capture=${grainyCamera()}`] : []),
      "--disable-features=" + [...own, "WebRtcHideLocalIpsWithMdns"].join(","),
    ],
  });
}

/**
 * A camera picture that costs an encoder what a real webcam's does: 1280x720 at 20 frames a
 * second, a textured scene with a moving object and fresh sensor grain in every frame, so that
 * each simulcast layer uses about the bitrate the browser gives it. Written once into the
 * temporary folder (about 33 MB) and reused.
 */
function grainyCamera() {
  const file = path.join(os.tmpdir(), "treffpunkt-grainy-camera-v1.y4m");
  if (fs.existsSync(file)) return file;
  const [width, height, frames] = [1280, 720, 24];
  const luma = width * height;
  const chroma = luma / 4;
  const scene = Buffer.alloc(luma);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      scene[y * width + x] = 60 + ((x * 3 + y * 2) % 120) + ((x >> 4) % 2) * 20;
    }
  }
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F20:1 Ip A1:1 C420jpeg\n`)];
  for (let frame = 0; frame < frames; frame++) {
    const grain = crypto.randomBytes(luma + 2 * chroma);
    const y = Buffer.alloc(luma);
    const [boxX, boxY] = [100 + frame * 40, 200 + Math.round(80 * Math.sin(frame / 4))];
    for (let i = 0; i < luma; i++) {
      const [px, py] = [i % width, Math.floor(i / width)];
      const inBox = px >= boxX && px < boxX + 240 && py >= boxY && py < boxY + 240;
      y[i] = Math.max(16, Math.min(235, (inBox ? 200 : scene[i]) + (grain[i] % 25) - 12));
    }
    const uv = Buffer.alloc(2 * chroma);
    for (let i = 0; i < 2 * chroma; i++) uv[i] = 128 + (grain[luma + i] % 9) - 4;
    parts.push(Buffer.from("FRAME\n"), y, uv);
  }
  const partial = `${file}.${process.pid}`;
  fs.writeFileSync(partial, Buffer.concat(parts));
  fs.renameSync(partial, file);
  return file;
}

/** A script that starts Chromium inside network namespace `namespace`. */
function chromiumInNamespace(namespace) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-chromium-"));
  const script = path.join(dir, "chromium");
  fs.writeFileSync(script, `#!/bin/sh\nexec ip netns exec ${namespace} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  return script;
}

export function binary() {
  if (process.env.TREFFPUNKT_BIN) return process.env.TREFFPUNKT_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), "..", "target");
  return path.join(target, "debug", "treffpunkt");
}

/**
 * For a suite: starts `treffpunkt standalone` with `args` and a browser (launched with
 * `browserOptions`, see `launchBrowser`) before its tests and stops both after them. The
 * returned object holds them as `server` and `browser` once the suite runs.
 */
export function standaloneWithBrowser(args = [], browserOptions = {}) {
  const running = { server: null, browser: null };
  before(async () => {
    running.server = await startTreffpunkt(args);
    running.browser = await launchBrowser(browserOptions);
  });
  after(async () => {
    await running.browser?.close();
    running.server?.child.kill("SIGKILL");
  });
  return running;
}

/**
 * Starts `treffpunkt standalone` on free ports of `host` (loopback unless a test network's
 * address is given, which is then also the media address unless `announce` says another; the
 * web server on `port` if given), with `env` added to its environment; resolves with its URL
 * and process.
 */
export async function startTreffpunkt(extraArgs = [], { host = "127.0.0.1", port = 0, announce = host, env = {} } = {}) {
  const addresses = announce === "127.0.0.1" ? [] : ["--announce-ip", announce];
  const child = spawn(binary(), ["standalone", "--listen", `${host}:${port}`, "--udp-port", "0", "--tcp-port", "0", ...addresses, ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn", ...env },
  });
  let output = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`standalone did not start:\n${output}`)), 20000);
    const onData = (chunk) => {
      output += chunk;
      const match = /Open (https?:\/\/[^\s]+) /.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1].replace(/\/$/, ""));
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (chunk) => (output += chunk));
    child.on("exit", (code) => reject(new Error(`standalone exited with ${code}:\n${output}`)));
    child.on("error", (error) => reject(new Error(`cannot start ${binary()}: ${error.message}`)));
  });
  if (process.env.TREFFPUNKT_SERVER_LOG) {
    // For a closer look at a failing test: everything the server writes, in a file.
    const log = fs.createWriteStream(process.env.TREFFPUNKT_SERVER_LOG);
    log.write(output);
    child.stdout.pipe(log);
    child.stderr.pipe(log);
  }
  return { url, child, output: () => output };
}

/**
 * A test network: network namespace `name` joined to this host by a veth pair, the host side
 * at `hostIp`, the namespace side at `guestIp`. `limit(kbit)` puts a token-bucket limit on what
 * reaches the namespace, or on both directions (`null` lifts it); `close()` removes everything. Needs root (CI runs as root);
 * throws with the reason when the namespace cannot be made.
 */
export function testNetwork(name, subnet) {
  const hostIf = `${name}-h`;
  const guestIf = `${name}-g`;
  const hostIp = `${subnet}.1`;
  const guestIp = `${subnet}.2`;
  const run = (...args) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
  const tc = (...args) => execFileSync("tc", args, { stdio: ["ignore", "ignore", "pipe"] });
  /** An nftables chain on the namespace's `hook` (output or input) with `rules`, in order. */
  const firewall = (rules, hook = "output") => {
    const nft = (...args) => run("netns", "exec", name, "nft", ...args);
    nft("add", "table", "inet", "treffpunkt");
    nft("add", "chain", "inet", "treffpunkt", hook, `{ type filter hook ${hook} priority 0; }`);
    for (const rule of rules) nft("add", "rule", "inet", "treffpunkt", hook, ...rule.split(" "));
  };
  const close = () => {
    for (const args of [["link", "del", hostIf], ["netns", "del", name]]) {
      try {
        run(...args);
      } catch {
        // Already gone.
      }
    }
  };
  close();
  run("netns", "add", name);
  try {
    run("link", "add", hostIf, "type", "veth", "peer", "name", guestIf);
    run("link", "set", guestIf, "netns", name);
    run("addr", "add", `${hostIp}/24`, "dev", hostIf);
    // No IPv6 link-local addresses, which the kernel would add a moment after the links come
    // up: a browser on either side sees the address change and fails the page loads under way
    // (net::ERR_NETWORK_CHANGED).
    run("link", "set", hostIf, "addrgenmode", "none");
    run("link", "set", hostIf, "up");
    run("netns", "exec", name, "ip", "addr", "add", `${guestIp}/24`, "dev", guestIf);
    run("netns", "exec", name, "ip", "link", "set", guestIf, "addrgenmode", "none");
    run("netns", "exec", name, "ip", "link", "set", guestIf, "up");
    run("netns", "exec", name, "ip", "link", "set", "lo", "up");
  } catch (error) {
    close();
    throw error;
  }
  return {
    name,
    hostIp,
    guestIp,
    /**
     * Limits what reaches the namespace (its downlink) to `kbit` kbit/s with a queue of about
     * `latencyMs`; `both` limits its uplink too. `null` lifts the limit.
     */
    limit(kbit, { latencyMs = 100, both = false } = {}) {
      const ends = [[[], hostIf], ...(both || kbit === null ? [[["ip", "netns", "exec", name], guestIf]] : [])];
      for (const [prefix, dev] of ends) {
        const args = ["qdisc", "replace", "dev", dev, "root"];
        const command = kbit === null ? ["qdisc", "del", "dev", dev, "root"] : [...args, "tbf", "rate", `${kbit}kbit`, "burst", "8kb", "latency", `${latencyMs}ms`];
        try {
          if (prefix.length) execFileSync(prefix[0], [...prefix.slice(1), "tc", ...command], { stdio: ["ignore", "ignore", "pipe"] });
          else tc(...command);
        } catch (error) {
          if (kbit !== null) throw error;
        }
      }
    },
    /**
     * Drops every UDP packet that leaves the namespace (an nftables rule inside it), as a
     * school's or an office's firewall does; TCP still passes.
     */
    dropUdp() {
      firewall(["meta l4proto udp drop"]);
    },
    /**
     * Loses `percent` in a hundred of the UDP packets that reach the namespace, at random (an
     * nftables rule on its input), as a poor Wi-Fi or mobile line does.
     */
    loseIncomingUdp(percent) {
      firewall([`meta l4proto udp numgen random mod 100 < ${percent} drop`], "input");
    },
    /**
     * Lets nothing leave the namespace but TCP to `port` (and answers on connections made to
     * it), as a network that lets only HTTPS out.
     */
    onlyTcpPort(port) {
      firewall(["oifname lo accept", "ct state established,related accept", `tcp dport ${port} accept`, "drop"]);
    },
    /** Gives the host's side of the pair another address, `${subnet}.${last}`, and returns it. */
    addHostAddress(last) {
      const address = `${subnet}.${last}`;
      run("addr", "add", `${address}/24`, "dev", hostIf);
      return address;
    },
    close,
  };
}

/**
 * Writes the manifests of a club to a temporary file and returns its path: the tenant `verein`
 * ("Sportverein", with `tenantSpec`, YAML flow mappings such as `policy: {adhocRooms: true}`,
 * added to its spec) and its room `sitzung` with a lobby, whose moderators come in with the
 * password "Vorsitz" (from the Secret `moderation`).
 */
export function clubManifests(...tenantSpec) {
  const text = `
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata: {name: verein}
spec:
  displayName: Sportverein
${tenantSpec.map((line) => `  ${line}\n`).join("")}---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata: {name: sitzung, namespace: tenant-verein}
spec:
  displayName: Vorstandssitzung
  access: Lobby
  moderatorPasswordSecretRef: {name: moderation, key: password}
---
apiVersion: v1
kind: Secret
metadata: {name: moderation, namespace: tenant-verein}
stringData: {password: Vorsitz}
`;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-club-")), "verein.yaml");
  fs.writeFileSync(file, text);
  return file;
}

/** Every URL any page of these tests requested or opened a WebSocket to. */
export const requestedUrls = [];

/** The next port `freePort` tries; each test process starts at another place (by its id). */
let nextPort = 20000 + ((process.pid * 7919) % 12000);

/**
 * A free TCP port on loopback for a process a test starts. It is chosen below the kernel's
 * ephemeral range (32768 and up), where the source ports of outgoing connections come from: a
 * port the kernel hands out for port 0 may be taken by a connection before the process binds it.
 */
export async function freePort() {
  const net = await import("node:net");
  for (;;) {
    const port = nextPort;
    nextPort = 20000 + ((nextPort - 20000 + 1) % 12000);
    const free = await new Promise((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/**
 * Starts `treffpunkt media-node` attached to a control plane at `grpc` (host:port), with
 * `extraArgs` added to its command line.
 */
export async function startMediaNode(grpc, grantKey, id, extraArgs = []) {
  const health = await freePort();
  const child = spawn(
    binary(),
    [
      "media-node",
      "--node-id", id,
      "--control-plane", `http://${grpc}`,
      "--udp-bind", "127.0.0.1:0",
      "--announce-ip", "127.0.0.1",
      "--health-listen", `127.0.0.1:${health}`,
      ...extraArgs,
    ],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, TREFFPUNKT_GRANT_KEY: grantKey, RUST_LOG: "warn" } },
  );
  return {
    child,
    id,
    async status() {
      try {
        const response = await fetch(`http://127.0.0.1:${health}/status`);
        return await response.json();
      } catch {
        return null;
      }
    },
  };
}

/** Opens a room page in a new context and joins under `name` (see `skipJoin`). */
export async function join(
  browser,
  url,
  name,
  {
    locale = "de-DE",
    permissions = ["camera", "microphone"],
    viewport = { width: 1280, height: 720 },
    initScript = null,
    skipJoin = false,
  } = {},
) {
  const context = await browser.newContext({ locale, permissions, viewport });
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`[${name}] page error: ${error.message}`));
  const failed = [];
  page.on("requestfailed", (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));
  page.on("console", (message) => message.type() === "error" && failed.push(`console: ${message.text()}`));
  page.on("request", (request) => requestedUrls.push(request.url()));
  page.on("websocket", (socket) => requestedUrls.push(socket.url()));
  await page.goto(url);
  try {
    await page.fill("#display-name", name);
  } catch (error) {
    // The lobby never showed: say what the page had come to, so that a failure that does not
    // repeat still tells where it stood.
    const where = await page
      .evaluate(() => ({
        readyState: document.readyState,
        screens: [...document.querySelectorAll("main > section")].filter((s) => !s.hidden).map((s) => s.id),
        script: typeof window.treffpunkt,
        log: window.treffpunkt?.log ?? [],
      }))
      .catch((reason) => String(reason));
    console.log(`[${name}] no lobby at ${url}: ${JSON.stringify(where)}; failed: ${JSON.stringify(failed)}`);
    await page.screenshot({ path: path.join(ARTIFACTS, `no-lobby-${name}.png`) }).catch(() => {});
    throw error;
  }
  // `skipJoin`: the name is typed, and the test clicks on (after giving a password, say).
  if (!skipJoin) await page.click("#join-button");
  return page;
}

/**
 * Joins `name` in a fresh context of `browser`, for the benchmarks: resolves with the page, its
 * context and the milliseconds from the click on "Join" to its first decoded video frame of
 * another participant (null after 30 s without one).
 */
export async function joinTimed(browser, room, name) {
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  await page.goto(room);
  await page.fill("#display-name", name);
  await page.evaluate(() => {
    document.getElementById("join-form").addEventListener("submit", () => (window.joinClickedAt = performance.now()), { capture: true });
  });
  await page.click("#join-button");
  const ms = await page.evaluate(async () => {
    const deadline = performance.now() + 30000;
    while (performance.now() < deadline) {
      const pc = window.treffpunkt.pc;
      if (pc) {
        let frames = 0;
        (await pc.getStats()).forEach((r) => {
          if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
        });
        if (frames > 0) return performance.now() - window.joinClickedAt;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return null;
  });
  return { page, context, ms };
}

/** The page's inbound media statistics, by kind, summed over its remote tracks. */
export async function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.treffpunkt.pc;
    const out = { framesDecoded: 0, totalSamplesReceived: 0, videoTracks: 0 };
    if (!pc) return out;
    (await pc.getStats()).forEach((report) => {
      if (report.type !== "inbound-rtp") return;
      if (report.kind === "video") {
        out.framesDecoded += report.framesDecoded || 0;
        out.videoTracks += 1;
      }
      if (report.kind === "audio") out.totalSamplesReceived += report.totalSamplesReceived || 0;
    });
    return out;
  });
}

/**
 * The local and remote candidates of the pair a page's connection uses, as its statistics give
 * them (`protocol`, `candidateType`, `relayProtocol`, `address`, `port`), or null before one
 * is chosen.
 */
export async function selectedCandidates(page) {
  return page.evaluate(async () => {
    const stats = await window.treffpunkt.pc.getStats();
    let pair = null;
    stats.forEach((report) => {
      if (report.type === "transport" && report.selectedCandidatePairId) pair = stats.get(report.selectedCandidatePairId);
    });
    return pair ? { local: stats.get(pair.localCandidateId), remote: stats.get(pair.remoteCandidateId) } : null;
  });
}

/** Waits until `check()` resolves truthy, polling every 200 ms, for at most `ms`. */
export async function eventually(check, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  return last;
}

/** Whether a page's decoded video frames and received audio samples grow between two samples. */
export async function decodesAndHears(page, gapMs = 1500) {
  const first = await inbound(page);
  await new Promise((r) => setTimeout(r, gapMs));
  const second = await inbound(page);
  return {
    video: second.framesDecoded > first.framesDecoded,
    audio: second.totalSamplesReceived > first.totalSamplesReceived,
    first,
    second,
  };
}

/**
 * What a page's media connection has come to, for the message of a failed test: its recent
 * log, each received track (its stream, packets, frames decoded, keyframes, keyframe requests
 * sent) and each sent layer (whether it is on, frames encoded, what limits its quality).
 */
export async function mediaDiagnosis(page) {
  return page
    .evaluate(async () => {
      const pc = window.treffpunkt.pc;
      if (!pc) return { log: window.treffpunkt.log, connection: null };
      const shownIn = new Map();
      for (const video of document.querySelectorAll(".tile video")) {
        const name = video.closest(".tile").querySelector(".name span")?.textContent;
        for (const track of video.srcObject?.getVideoTracks?.() ?? []) shownIn.set(track.id, name);
      }
      const streams = new Map();
      for (const transceiver of pc.getTransceivers()) {
        const id = transceiver.receiver.track.id;
        streams.set(id, { mid: transceiver.mid, direction: transceiver.currentDirection, tile: shownIn.get(id) ?? null });
      }
      const received = [];
      const sent = [];
      for (const stat of (await pc.getStats()).values()) {
        if (stat.type === "inbound-rtp" && stat.kind === "video") {
          received.push({
            ...streams.get(stat.trackIdentifier),
            ssrc: stat.ssrc,
            packets: stat.packetsReceived,
            frames: stat.framesDecoded,
            keyframes: stat.keyFramesDecoded,
            plis: stat.pliCount,
          });
        } else if (stat.type === "outbound-rtp" && stat.kind === "video") {
          sent.push({ rid: stat.rid, active: stat.active, frames: stat.framesEncoded, limit: stat.qualityLimitationReason });
        }
      }
      return { log: window.treffpunkt.log, connection: pc.connectionState, received, sent };
    })
    .catch((reason) => String(reason));
}

const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/**
 * The serious and critical accessibility violations axe-core finds in `page` as it is now, as
 * readable lines (rule, impact, the elements). axe runs inside the page; it is evaluated
 * through the browser's debugging protocol, which the page's Content-Security-Policy does
 * not govern, so the client itself need not allow any script but its own.
 */
export async function accessibilityViolations(page) {
  const loaded = await page.evaluate(() => typeof window.axe === "object");
  if (!loaded) await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")) }));
  });
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.join(", ")}`);
}

/**
 * Records in `page`, every 100 ms, whether its decoded video frames grew, across moves to a new
 * connection, measured in the page itself (a test's own polling stalls when the machine is busy
 * and would count that as the page's); the returned function gives the longest time without a
 * new frame so far, in ms, when it ended (the page's clock, as in its log), the frames the page
 * decoded since the watch began, and for each media connection seen, when it was first seen and
 * when it first sent, received and decoded video.
 */
export async function watchDecoding(page) {
  await page.evaluate(() => {
    const watch = { pc: null, frames: 0, decoded: 0, last: performance.now(), longest: 0, ended: null, connections: [] };
    window.decodingWatch = watch;
    setInterval(async () => {
      const pc = window.treffpunkt.pc;
      if (!pc) return;
      let [frames, sent, received] = [0, 0, 0];
      (await pc.getStats()).forEach((report) => {
        if (report.kind !== "video") return;
        if (report.type === "inbound-rtp") {
          frames += report.framesDecoded || 0;
          received += report.packetsReceived || 0;
        }
        if (report.type === "outbound-rtp") sent += report.packetsSent || 0;
      });
      const now = performance.now();
      if (pc !== watch.pc) watch.connections.push({ at: Math.round(now), sent: null, received: null, decoded: null });
      const connection = watch.connections[watch.connections.length - 1];
      for (const [key, count] of [["sent", sent], ["received", received], ["decoded", frames]]) {
        if (connection[key] === null && count > 0) connection[key] = Math.round(now);
      }
      const grown = pc === watch.pc ? frames - watch.frames : watch.pc === null ? 0 : frames;
      if (grown > 0) {
        watch.decoded += grown;
        if (now - watch.last > watch.longest) [watch.longest, watch.ended] = [now - watch.last, now];
        watch.last = now;
      }
      watch.pc = pc;
      watch.frames = frames;
    }, 100);
  });
  return () =>
    page.evaluate(() => {
      const watch = window.decodingWatch;
      const now = performance.now();
      const [longest, ended] = now - watch.last > watch.longest ? [now - watch.last, now] : [watch.longest, watch.ended];
      return { longest: Math.round(longest), ended: ended && Math.round(ended), frames: watch.decoded, connections: watch.connections };
    });
}

/**
 * For `join`'s `initScript`; runs in the page before its own scripts: every audio track it receives passes through an
 * encoded-frame stream that notes when each frame (one Opus packet) arrived from the network, so
 * the test can read the longest time between two of them. With encoded streams on, every sender and receiver
 * of the connection must be piped through, so the others are passed on untouched.
 */
export function watchAudioFrames() {
  const gaps = [];
  window.treffpunktTest = { audioGaps: gaps };
  const passOn = (streams) => streams.readable.pipeTo(streams.writable).catch(() => {});
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = function (config = {}) {
    const pc = new Original({ ...config, encodedInsertableStreams: true });
    const addTransceiver = pc.addTransceiver.bind(pc);
    pc.addTransceiver = (...args) => {
      const transceiver = addTransceiver(...args);
      passOn(transceiver.sender.createEncodedStreams());
      return transceiver;
    };
    pc.addEventListener("track", ({ track, receiver }) => {
      const streams = receiver.createEncodedStreams();
      if (track.kind !== "audio") {
        passOn(streams);
        return;
      }
      const gap = { longest: 0, frames: 0, last: 0, reset() { this.longest = 0; this.frames = 0; } };
      gaps.push(gap);
      streams.readable
        .pipeThrough(
          new TransformStream({
            transform(frame, controller) {
              // When the packet came off the network (not when this script got to run: the
              // page's main thread may be busy for a moment, and that is no gap in the sound).
              const now = frame.getMetadata().receiveTime ?? performance.now();
              if (gap.frames > 0 && now - gap.last > gap.longest) {
                gap.longest = now - gap.last;
                gap.endedAt = new Date().toISOString();
              }
              gap.last = now;
              gap.frames += 1;
              controller.enqueue(frame);
            },
          }),
        )
        .pipeTo(streams.writable)
        .catch(() => {});
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
}
