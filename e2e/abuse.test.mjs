// Garbage on the media port during a browser call: 20,000 datagrams a second for 10 s, half
// from addresses the node has never seen and half forged with the browsers' own addresses
// (`treffpunkt-loadgen flood`, which needs CAP_NET_RAW for the forged half: CI runs as root).
// Both pages must keep decoding video, with no gap of a second, and the server's log must stay
// at a few lines.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { describe, test } from "node:test";

import { decodesAndHears, eventually, join, selectedCandidates, standaloneWithBrowser, watchDecoding } from "./harness.mjs";

function loadgen() {
  if (process.env.TREFFPUNKT_LOADGEN) return process.env.TREFFPUNKT_LOADGEN;
  if (process.env.TREFFPUNKT_BIN) return path.join(path.dirname(process.env.TREFFPUNKT_BIN), "treffpunkt-loadgen");
  const target = process.env.CARGO_TARGET_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), "..", "target");
  return path.join(target, "debug", "treffpunkt-loadgen");
}

/** The addresses of the page's selected candidate pair: its own and the media node's. */
async function selectedPair(page) {
  const pair = await selectedCandidates(page);
  if (!pair) return null;
  const address = (candidate) => `${candidate.address || candidate.ip}:${candidate.port}`;
  return { local: address(pair.local), remote: address(pair.remote) };
}

function flood(to, spoof) {
  const child = spawn(loadgen(), ["flood", "--to", to, "--spoof", spoof.join(","), "--per-second", "20000", "--seconds", "10"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve(output) : reject(new Error(`flood exited with ${code}: ${output}`))));
  });
}

describe("garbage on the media port", () => {
  const running = standaloneWithBrowser();

  test("a flood from unknown sources and forged with the browsers' addresses does not stop their call", async () => {
    const { server, browser } = running;
    const room = `${server.url}/public/flut`;
    const anna = await join(browser, room, "Anna");
    const ben = await join(browser, room, "Ben");
    const flowing = await eventually(async () => {
      const [a, b] = await Promise.all([decodesAndHears(anna), decodesAndHears(ben)]);
      return a.video && b.video;
    }, 30000);
    assert.ok(flowing, "Anna and Ben decode each other's video before the flood");
    const [annaPair, benPair] = [await selectedPair(anna), await selectedPair(ben)];
    assert.ok(annaPair && benPair, "both pages have a selected candidate pair");
    // Chromium leaves the remote candidate's address out of its statistics; the node announces
    // the server's own address, so the media port is that address and the pair's port.
    const mediaPort = `${new URL(server.url).hostname}:${annaPair.remote.split(":").pop()}`;
    assert.equal(annaPair.remote, benPair.remote, "one media port for both");

    const logBefore = server.output().split("\n").length;
    const watches = await Promise.all([watchDecoding(anna), watchDecoding(ben)]);
    const outcome = await flood(mediaPort, [annaPair.local, benPair.local]).then(
      (output) => ({ output }),
      (error) => ({ error }),
    );
    const [annaWatch, benWatch] = await Promise.all(watches.map((watch) => watch()));
    if (outcome.error) throw outcome.error;
    const sent = outcome.output;
    const logLines = server.output().split("\n").slice(logBefore - 1).filter((line) => line.trim());

    assert.match(sent, /sent 200000 datagrams/);
    for (const [name, watch] of [["Anna", annaWatch], ["Ben", benWatch]]) {
      assert.ok(watch.longest < 1000, `${name}'s decoded frames kept growing through the flood: longest stall ${watch.longest} ms`);
      assert.ok(watch.frames > 100, `${name} decoded frames all along: ${watch.frames}`);
    }
    assert.ok(logLines.length <= 4, `the log stays at a few lines:\n${logLines.join("\n")}`);
  });
});
