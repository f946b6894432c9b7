// Benchmark: the three ways media reaches a participant, side by side in one run: UDP, ICE-TCP
// (the participant's network drops UDP) and TURN over TLS on port 443 (it lets only HTTPS out).
//
//   node bench-transports.mjs [rounds] [window-seconds]      (default 8 and 20)
//
// For each way, a test network (a network namespace joined to this host by a veth pair, with
// the firewall of that way inside it) holds one Chromium as the guest; another Chromium on the
// host publishes. Standalone mode runs on the host side of the pair (with `--turn` for the third
// way). Measured:
// - join → first frame: from the guest's click on "Join" to its first decoded video frame of the
//   publisher, `rounds` times;
// - CPU per forwarded packet: over a window of a two-party call, the CPU time of the server
//   process (gateway and media node) and, for TURN, of coturn, divided by the RTP packets the
//   two pages received in that window (each forwarded once by the node).
// The result is JSON on stdout, with each way's figures against UDP's from the same run. Needs
// root (network namespaces, port 443) and Debian's coturn; sends nothing but to the test
// networks.

import crypto from "node:crypto";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { eventually, join, joinTimed, launchBrowser, selectedCandidates, startTreffpunkt, testNetwork } from "./harness.mjs";

const rounds = Number(process.argv[2] || 8);
const windowSeconds = Number(process.argv[3] || 20);
const TICKS_PER_SECOND = 100;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** CPU seconds a process has used (user + system). */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** The pid of `parent`'s child running `name`, if any. */
function childNamed(parent, name) {
  try {
    return Number(execFileSync("pgrep", ["-P", String(parent), name], { encoding: "utf8" }).trim().split("\n")[0]) || null;
  } catch {
    return null;
  }
}

/** RTP packets a page has received, audio and video. */
function packetsReceived(page) {
  return page.evaluate(async () => {
    let packets = 0;
    if (!window.treffpunkt.pc) return 0;
    (await window.treffpunkt.pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp") packets += report.packetsReceived || 0;
    });
    return packets;
  });
}

/** The local candidate the page's connection uses: "udp", "tcp" or "relay/tls". */
async function transportOf(page) {
  const local = (await selectedCandidates(page))?.local;
  if (!local) return null;
  return local.candidateType === "relay" ? `relay/${local.relayProtocol}` : local.protocol;
}

const WAYS = [
  { name: "udp", subnet: "10.231.31", firewall: () => {} },
  { name: "ice-tcp", subnet: "10.231.32", firewall: (network) => network.dropUdp() },
  { name: "turn-tls", subnet: "10.231.33", firewall: (network) => network.onlyTcpPort(443), turn: true },
];

async function measure(way) {
  const network = testNetwork(`tpb${way.name.replace(/[^a-z]/g, "").slice(0, 4)}`, way.subnet);
  const state = fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-bench-"));
  let server;
  const browsers = [];
  try {
    way.firewall(network);
    // TURN: the web server on port 443 of one address, media and coturn on another (see
    // networks.test.mjs); the others: the web server on a free port.
    const announce = way.turn ? network.addHostAddress(3) : network.hostIp;
    const args = ["--self-signed", "--state-dir", state, "--max-joins-per-minute", "100000", ...(way.turn ? ["--turn"] : [])];
    server = await startTreffpunkt(args, { host: network.hostIp, port: way.turn ? 443 : 0, announce });
    const certificate = new crypto.X509Certificate(fs.readFileSync(path.join(state, "standalone-tls", "cert.pem")));
    const trustKey = crypto.createHash("sha256").update(certificate.publicKey.export({ type: "spki", format: "der" })).digest("base64");
    const hosts = [network.hostIp, announce];
    const publisherBrowser = await launchBrowser({ trustKey, host: hosts });
    const guestBrowser = await launchBrowser({ namespace: network.name, trustKey, host: hosts });
    browsers.push(publisherBrowser, guestBrowser);
    const room = `${server.url}/public/bench-${way.name}`;
    const publisher = await join(publisherBrowser, room, "Publisher");
    await publisher.waitForSelector("#call:not([hidden])");

    const times = [];
    let transport = null;
    for (let round = 0; round < rounds; round++) {
      const { context, ms, page } = await joinTimed(guestBrowser, room, `Guest ${round}`);
      if (ms !== null) times.push(ms);
      transport ??= await transportOf(page);
      await context.close();
    }

    // A two-party call for the CPU window, once it flows both ways.
    const guest = await join(guestBrowser, room, "Guest");
    await eventually(async () => (await packetsReceived(guest)) > 500 && (await packetsReceived(publisher)) > 500, 30000);
    await new Promise((r) => setTimeout(r, 3000));
    const coturn = way.turn ? childNamed(server.child.pid, "turnserver") : null;
    const pids = [server.child.pid, ...(coturn ? [coturn] : [])];
    const before = { cpu: pids.map(cpuSeconds), packets: (await packetsReceived(guest)) + (await packetsReceived(publisher)) };
    await new Promise((r) => setTimeout(r, windowSeconds * 1000));
    const after = { cpu: pids.map(cpuSeconds), packets: (await packetsReceived(guest)) + (await packetsReceived(publisher)) };
    const packets = after.packets - before.packets;
    const serverCpu = after.cpu[0] - before.cpu[0];
    const turnCpu = coturn ? after.cpu[1] - before.cpu[1] : 0;
    const sorted = [...times].sort((a, b) => a - b);
    return {
      way: way.name,
      transport,
      joins: times.length,
      joinToFirstFrameMs: times.length ? { p50: Math.round(percentile(sorted, 50)), p95: Math.round(percentile(sorted, 95)), max: Math.round(sorted.at(-1)) } : null,
      windowSeconds,
      forwardedPackets: packets,
      packetsPerSecond: Math.round(packets / windowSeconds),
      serverMicrosPerPacket: packets ? Number(((serverCpu * 1e6) / packets).toFixed(1)) : null,
      turnMicrosPerPacket: coturn && packets ? Number(((turnCpu * 1e6) / packets).toFixed(1)) : null,
    };
  } finally {
    for (const browser of browsers) await browser.close();
    server?.child.kill("SIGKILL");
    network.close();
  }
}

const results = [];
for (const way of WAYS) results.push(await measure(way));
const udp = results[0];
for (const result of results) {
  const total = (result.serverMicrosPerPacket ?? 0) + (result.turnMicrosPerPacket ?? 0);
  const udpTotal = udp.serverMicrosPerPacket ?? 0;
  result.againstUdp = {
    joinP50: udp.joinToFirstFrameMs && result.joinToFirstFrameMs ? Number((result.joinToFirstFrameMs.p50 / udp.joinToFirstFrameMs.p50).toFixed(2)) : null,
    cpuPerPacket: udpTotal ? Number((total / udpTotal).toFixed(2)) : null,
  };
}
console.log(JSON.stringify({ scenario: "one publisher on the host, one guest behind each network's firewall", rounds, results }, null, 2));
