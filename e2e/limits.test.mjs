// The gateway's limits as a person meets them in the browser: a join refused for a limit is
// explained in their language, and the page stays in the lobby.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { eventually, join, standaloneWithBrowser } from "./harness.mjs";

describe("limits in the browser", () => {
  // One signalling connection per address: everyone here comes from the same one.
  const running = standaloneWithBrowser(["--max-websockets-per-address", "1"]);

  test("a second connection from the same address is told why, in German and in English", async () => {
    const { server, browser } = running;
    const room = `${server.url}/public/eng`;
    const first = await join(browser, room, "Eins", { permissions: [] });
    assert.ok(await eventually(async () => first.isVisible("#call")), "the first is in the call");

    const german = await join(browser, room, "Zwei", { permissions: [] });
    assert.ok(
      await eventually(async () => /zu viele Verbindungen/.test(await german.textContent("#notice")), 10000),
      "the German page says there are too many connections",
    );
    assert.equal(await german.isVisible("#lobby"), true, "and stays in the lobby");

    const english = await join(browser, room, "Drei", { locale: "en-US", permissions: [] });
    assert.ok(
      await eventually(async () => /too many connections/.test(await english.textContent("#notice")), 10000),
      "the English page says so in English",
    );
    for (const page of [first, german, english]) await page.context().close();
  });
});
