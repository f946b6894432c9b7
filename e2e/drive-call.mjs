// A browser call that a Rust test drives: the operator's cluster tests run their control plane
// and media nodes themselves and need real pages in one of their rooms.
//
//   node drive-call.mjs ROOM-URL NAME...
//
// Launches headless Chromium (fake camera and microphone), joins one page per NAME to the room
// and waits until every page decodes video and hears audio. Then it prints one JSON line,
// `{"ready":true}` (or `{"ready":false,"why":...}` and exits 1), and from that moment each page
// watches, in the page itself, how long it goes without a new decoded video frame, across moves
// to a new connection. Each line `report` on standard input is answered with one JSON line:
// `{"longest":[ms...],"ended":[ms...],"frames":[n...],"connections":[[...]...],"decoding":[bool...],
// "log":[[line...]...]}`, by page in the order of the names: the longest time without a new
// frame since ready and when it ended on the page's clock, the frames decoded since ready, each
// media connection's first moments (see `watchDecoding`), whether the page decodes video and
// hears audio now, and the page's own log of its connection's events. End of input closes the
// browser.

import readline from "node:readline";

import { decodesAndHears, eventually, join, launchBrowser, watchDecoding } from "./harness.mjs";

const [url, ...names] = process.argv.slice(2);
if (!url || names.length === 0) {
  console.error("usage: node drive-call.mjs ROOM-URL NAME...");
  process.exit(2);
}

const say = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

/** Whether every page decodes video and hears audio. */
async function allFlowing(pages) {
  const flows = await Promise.all(pages.map((page) => decodesAndHears(page)));
  return flows.map((flow) => flow.video && flow.audio);
}

const browser = await launchBrowser({ mute: true });
try {
  const pages = [];
  for (const name of names) pages.push(await join(browser, url, name));
  const ready = await eventually(async () => (await allFlowing(pages)).every(Boolean), 60000);
  if (!ready) {
    say({ ready: false, why: `not every page decodes and hears: ${JSON.stringify(await allFlowing(pages))}` });
    process.exitCode = 1;
  } else {
    const watches = await Promise.all(pages.map(watchDecoding));
    say({ ready: true });
    for await (const line of readline.createInterface({ input: process.stdin })) {
      if (line.trim() !== "report") continue;
      const watched = await Promise.all(watches.map((watch) => watch()));
      say({
        longest: watched.map((watch) => watch.longest),
        ended: watched.map((watch) => watch.ended),
        frames: watched.map((watch) => watch.frames),
        connections: watched.map((watch) => watch.connections),
        decoding: await allFlowing(pages),
        log: await Promise.all(pages.map((page) => page.evaluate(() => window.treffpunkt.log))),
      });
    }
  }
} catch (error) {
  say({ ready: false, why: String(error?.stack || error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
