// Debian's Firefox ESR for the browser tests, driven over WebDriver BiDi by puppeteer-core:
// with a fake camera and microphone, treating the test server's plain-HTTP origin as secure, and
// with every request not addressed to the test server sent to a proxy on a loopback port where
// nothing listens, so that it contacts no host at all.
//
// `launchFirefox` runs it on this host; `launchFirefoxIn` inside a test network's namespace
// (as a machine behind that network's firewall). Firefox's remote agent listens only on the
// loopback of its own namespace, so there a small relay in the namespace carries the test's
// connection from the namespace's address to it.

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

import { eventually, freePort, requestedUrls } from "./harness.mjs";

const FIREFOX = process.env.FIREFOX_PATH || "/usr/bin/firefox-esr";

/** The preferences every test Firefox gets; `secureHost` is the test server's address. */
function preferences(secureHost) {
  return {
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
  };
}

/** Firefox, headless, on this host. */
export async function launchFirefox(secureHost) {
  return puppeteer.launch({ browser: "firefox", executablePath: FIREFOX, headless: true, extraPrefsFirefox: preferences(secureHost) });
}

/** What a relay in the namespace runs: connections to `listen` go on to Firefox's agent. */
const RELAY = `
const net = require("node:net");
const [host, port] = process.argv.slice(1);
net.createServer((client) => {
  const agent = net.connect(Number(port), "127.0.0.1");
  client.pipe(agent).pipe(client);
  const close = () => { client.destroy(); agent.destroy(); };
  client.on("error", close);
  agent.on("error", close);
}).listen(Number(port), host);
`;

/**
 * Firefox, headless, inside `network`'s namespace; resolves with the connected browser, whose
 * `close()` also ends Firefox and the relay.
 */
export async function launchFirefoxIn(network, secureHost) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-firefox-"));
  const prefs = { ...preferences(secureHost), "browser.shell.checkDefaultBrowser": false, "browser.startup.homepage_override.mstone": "ignore", "datareporting.policy.dataSubmissionEnabled": false, "toolkit.telemetry.reportingpolicy.firstRun": false, "app.update.disabledForTesting": true };
  fs.writeFileSync(path.join(profile, "user.js"), Object.entries(prefs).map(([key, value]) => `user_pref(${JSON.stringify(key)}, ${JSON.stringify(value)});`).join("\n"));
  const port = await freePort();
  const inNamespace = (command, args) => spawn("ip", ["netns", "exec", network.name, command, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  const firefox = inNamespace(FIREFOX, ["--headless", "--no-remote", "--profile", profile, "--remote-debugging-port", String(port), "about:blank"]);
  const relay = inNamespace(process.execPath, ["-e", RELAY, network.guestIp, String(port)]);
  const stop = () => {
    for (const child of [firefox, relay]) child.kill("SIGKILL");
  };
  const endpoint = `ws://${network.guestIp}:${port}/session`;
  const browser = await eventually(async () => {
    try {
      // As Firefox's agent sees it, the connection comes from its own loopback (through the
      // relay), and so names that as its host.
      return await puppeteer.connect({ browserWSEndpoint: endpoint, protocol: "webDriverBiDi", headers: { Host: `127.0.0.1:${port}` } });
    } catch {
      return null;
    }
  }, 30000);
  if (!browser) {
    stop();
    throw new Error(`Firefox in ${network.name} did not answer at ${endpoint}`);
  }
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close().catch(() => {});
    stop();
  };
  return browser;
}

/** Whether Firefox's page decodes video frames and receives audio packets between two samples. */
export async function firefoxReceives(page) {
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

/** A Firefox page that opens `url` and joins (or, in a lobby, knocks) under `name`. */
export async function joinFirefox(firefox, url, name) {
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
