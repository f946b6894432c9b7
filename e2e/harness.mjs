// Shared pieces of the browser tests: start Treffpunkt in standalone mode, launch Debian's
// Chromium with a fake camera and microphone, join rooms, and read WebRTC statistics.
//
// Nothing here downloads a browser: playwright-core drives /usr/bin/chromium. The flags keep
// Chromium off every network but loopback (no DNS lookups of Google hosts, no mDNS).

import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { chromium } from "playwright-core";

export const ARTIFACTS = path.join(path.dirname(new URL(import.meta.url).pathname), "artifacts");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

const BASE_ARGS = [
  "--use-fake-device-for-media-stream",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
];

/** Playwright's own --disable-features list; Chromium keeps only the last such switch. */
function playwrightDisabledFeatures() {
  const bundle = createRequire(import.meta.url).resolve("playwright-core/lib/coreBundle");
  const match = /disabledFeatures = \[([\s\S]*?)\]\.filter\(Boolean\)/.exec(fs.readFileSync(bundle, "utf8"));
  if (!match) throw new Error("playwright-core changed: cannot find its disabledFeatures list");
  return [...match[1].matchAll(/^\s*"([^"]+)",?\s*$/gm)].map((m) => m[1]);
}

/**
 * Chromium, headless. `grantDevices: true` answers every camera and microphone prompt with yes
 * (the fake devices); otherwise each context decides through its permissions.
 */
export async function launchBrowser({ grantDevices = true } = {}) {
  const own = playwrightDisabledFeatures();
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    ignoreDefaultArgs: ["--disable-features=" + own.join(",")],
    args: [
      ...BASE_ARGS,
      ...(grantDevices ? ["--use-fake-ui-for-media-stream"] : []),
      "--disable-features=" + [...own, "WebRtcHideLocalIpsWithMdns"].join(","),
    ],
  });
}

function binary() {
  if (process.env.TREFFPUNKT_BIN) return process.env.TREFFPUNKT_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), "..", "target");
  return path.join(target, "debug", "treffpunkt");
}

/** Starts `treffpunkt standalone` on free loopback ports; resolves with its URL and process. */
export async function startTreffpunkt(extraArgs = []) {
  const child = spawn(binary(), ["standalone", "--listen", "127.0.0.1:0", "--udp-port", "0", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
  });
  let output = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`standalone did not start:\n${output}`)), 20000);
    const onData = (chunk) => {
      output += chunk;
      const match = /Open (http:\/\/[^\s]+) /.exec(output);
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
  return { url, child, output: () => output };
}

/** Every URL any page of these tests requested or opened a WebSocket to. */
export const requestedUrls = [];

/** A free TCP port on loopback. */
export async function freePort() {
  const net = await import("node:net");
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `treffpunkt media-node` attached to a control plane at `grpc` (host:port). */
export async function startMediaNode(grpc, grantKey, id) {
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

/** Opens a room page in a new context and joins under `name`. */
export async function join(browser, url, name, { locale = "de-DE", permissions = ["camera", "microphone"] } = {}) {
  const context = await browser.newContext({ locale, permissions, viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`[${name}] page error: ${error.message}`));
  page.on("request", (request) => requestedUrls.push(request.url()));
  page.on("websocket", (socket) => requestedUrls.push(socket.url()));
  await page.goto(url);
  await page.fill("#display-name", name);
  await page.click("#join-button");
  return page;
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
