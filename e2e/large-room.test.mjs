// A large room in the browser, as at a council session streamed to many: the grid shows who is on
// stage (a camera, a screen, a voice), one tile counts the listeners, and the list of
// participants names everyone. Most listeners here are plain signalling sockets that join with
// microphone and camera off and never connect media (they stay in the room for the 30 s a
// media connection may take); the address limit of 20 sockets allows 18 of them beside the two
// pages.

import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";

import { ARTIFACTS, decodesAndHears, eventually, join, standaloneWithBrowser } from "./harness.mjs";

const LISTENERS = 18;

/** Opens `count` signalling sockets from `page` that join `room` as listeners; resolves with
 * how many were welcomed. `window.listeners` keeps them, to speak through. */
async function joinListeners(page, room, count) {
  return page.evaluate(
    async ({ room, count }) => {
      const url = `ws://${location.host}/api/v1/rooms/${room}/signal`;
      window.listeners = [];
      const welcomed = await Promise.all(
        Array.from({ length: count }, (_, index) => {
          const socket = new WebSocket(url);
          window.listeners.push(socket);
          return new Promise((resolve) => {
            socket.addEventListener("open", () =>
              socket.send(JSON.stringify({ type: "join", name: `Zuhörer ${index + 1}`, audioMuted: true, videoMuted: true })),
            );
            socket.addEventListener("message", (event) => {
              if (JSON.parse(event.data).type === "welcome") resolve(true);
            });
            socket.addEventListener("close", () => resolve(false));
          });
        }),
      );
      return welcomed.filter(Boolean).length;
    },
    { room, count },
  );
}

/** The names on the tiles `page` shows, its own included. */
const shownTiles = (page) =>
  page.$$eval("#grid .tile:not([hidden]):not(.listeners) .name span:first-child", (names) => names.map((name) => name.textContent));

describe("a large room in the browser", () => {
  const running = standaloneWithBrowser();

  test("the grid shows who is on stage and counts the listeners; the list names everyone", async () => {
    const { server, browser } = running;
    const anna = await join(browser, `${server.url}/public/ratssitzung`, "Anna");
    assert.ok(await eventually(async () => anna.isVisible("#call")), "Anna is in the call");

    // Every notice Anna's page shows, to look for a listener's name in them.
    await anna.evaluate(() => {
      window.noticesSeen = [];
      new MutationObserver(() => window.noticesSeen.push(document.getElementById("notice").textContent)).observe(
        document.getElementById("notice"),
        { childList: true, characterData: true, subtree: true },
      );
    });
    // The listeners' sockets come from the landing page, which opens none of its own.
    const sockets = await (await browser.newContext()).newPage();
    await sockets.goto(server.url);
    assert.equal(await joinListeners(sockets, "public/ratssitzung", LISTENERS), LISTENERS, "every listener is in");

    const counted = await eventually(async () => {
      const text = (await anna.textContent("#listeners button").catch(() => "")) || "";
      return /18 weitere hören zu/.test(text) ? text : null;
    });
    assert.ok(counted, "Anna's grid counts the 18 listeners on one tile");
    assert.deepEqual(await shownTiles(anna), ["Anna (Sie)"], "the listeners have no tiles of their own");

    const ben = await join(browser, `${server.url}/public/ratssitzung`, "Ben", { locale: "en-US" });
    assert.ok(await eventually(async () => ben.isVisible("#call")));
    assert.ok(
      await eventually(async () => JSON.stringify(await shownTiles(ben)) === JSON.stringify(["Ben (You)", "Anna"])),
      `Ben's grid shows Anna, whose camera is on: ${JSON.stringify(await shownTiles(ben))}`,
    );
    assert.match((await ben.textContent("#listeners button")) || "", /18 more listening/);
    assert.ok(
      await eventually(async () => {
        const now = await decodesAndHears(ben);
        return now.video && now.audio;
      }),
      "Ben sees and hears Anna",
    );

    // A listener's camera comes on: the listener comes on stage.
    await sockets.evaluate(() =>
      window.listeners[4].send(JSON.stringify({ type: "media", audioMuted: true, videoMuted: false, screenSharing: false })),
    );
    assert.ok(
      await eventually(async () => (await shownTiles(anna)).includes("Zuhörer 5")),
      "Zuhörer 5 is on Anna's stage once the camera is on",
    );
    assert.match((await anna.textContent("#listeners button")) || "", /17 weitere hören zu/);

    // The list of participants names everyone; the listeners' tile opens it.
    await anna.click("#listeners button");
    assert.ok(await eventually(async () => anna.isVisible("#people")), "the tile opens the list");
    const listed = await anna.$$eval("#people-list li strong", (names) => names.map((name) => name.textContent));
    assert.equal(listed.length, LISTENERS + 2, `Anna, Ben and 18 listeners: ${JSON.stringify(listed)}`);
    await anna.screenshot({ path: path.join(ARTIFACTS, "large-room.png") });

    // Nobody's coming and going is announced one by one in a room this large.
    await sockets.evaluate(() => window.listeners[0].send(JSON.stringify({ type: "leave" })));
    assert.ok(await eventually(async () => /16 weitere hören zu/.test((await anna.textContent("#listeners button")) || "")));
    // The first twelve came while the room was small, and were announced (in whatever order
    // their sockets got in); the others and the one who left were not.
    const notices = await anna.evaluate(() => window.noticesSeen);
    const joins = notices.filter((text) => /Zuhörer \d+ ist beigetreten/.test(text));
    assert.ok(joins.length > 0 && joins.length <= 12, `only the first twelve are announced: ${JSON.stringify(notices)}`);
    assert.ok(!notices.some((text) => text.includes("verlassen")), `nobody's leaving is announced: ${JSON.stringify(notices)}`);
    for (const page of [anna, ben, sockets]) await page.context().close();
  });
});
