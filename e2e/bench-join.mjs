// Benchmark: the time from clicking "Join" to the first decoded frame of the other participant,
// in headless Chromium against standalone mode.
//
//   node bench-join.mjs [rounds]        (default 10)
//
// One page stays in the room; each round a new page joins, and the page itself measures from
// the join click to the first inbound video frame its WebRTC statistics report as decoded. The
// result is JSON on stdout.

import { join, joinTimed, launchBrowser, startTreffpunkt } from "./harness.mjs";

const rounds = Number(process.argv[2] || 10);

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// Every round joins from this machine's one address: lift the joins per address per minute.
const server = await startTreffpunkt(["--max-joins-per-minute", "100000"]);
const browser = await launchBrowser();
const room = `${server.url}/public/bench`;
try {
  const host = await join(browser, room, "Host");
  await host.waitForSelector("#call:not([hidden])");
  const times = [];
  for (let round = 0; round < rounds; round++) {
    const { context, ms } = await joinTimed(browser, room, `Guest ${round}`);
    if (ms !== null) times.push(ms);
    await context.close();
  }
  const sorted = [...times].sort((a, b) => a - b);
  console.log(
    JSON.stringify(
      {
        scenario: "join click to first decoded remote video frame, one other participant",
        rounds,
        ms: {
          p50: Math.round(percentile(sorted, 50)),
          p95: Math.round(percentile(sorted, 95)),
          min: Math.round(sorted[0]),
          max: Math.round(sorted[sorted.length - 1]),
        },
        samples: times.map(Math.round),
      },
      null,
      2,
    ),
  );
} finally {
  await browser.close();
  server.child.kill("SIGKILL");
}
