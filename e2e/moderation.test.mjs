// Moderation as people meet it in the browser: the lobby (waiting without and with a moderator,
// let in, declined), raised hands in order seen by all, and a moderator who mutes and removes
// someone and ends the meeting, each seen in the other pages.

import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";

import { ARTIFACTS, clubManifests, decodesAndHears, eventually, join, standaloneWithBrowser } from "./harness.mjs";


const manifests = clubManifests("policy: {adhocRooms: true}");

const textOf = async (page, selector) => (await page.textContent(selector)) || "";

/** Whether `page` shows `selector` within a while. */
const shows = (page, selector, ms = 20000) => eventually(async () => page.isVisible(selector), ms);

async function flowing(page) {
  return eventually(async () => {
    const now = await decodesAndHears(page);
    return now.video && now.audio;
  });
}

describe("moderation in the browser", () => {
  const running = standaloneWithBrowser(["--manifests", manifests]);

  test("the lobby: people wait, are let in or declined", async () => {
    const { server, browser } = running;
    const room = `${server.url}/verein/sitzung`;
    const ben = await join(browser, room, "Ben", { locale: "en-US" });
    assert.ok(await shows(ben, "#waiting"), "Ben waits");
    assert.match(await textOf(ben, "#waiting-text"), /Nobody is here yet/);
    await ben.screenshot({ path: path.join(ARTIFACTS, "waiting.png") });

    const anna = await join(browser, room, "Anna", { skipJoin: true });
    await anna.click("#moderator-toggle");
    await anna.fill("#room-password", "Vorsitz");
    await anna.click("#join-button");
    assert.ok(await shows(anna, "#call"), "the chair comes in with the moderators' password");
    assert.ok(
      await eventually(async () => (await textOf(anna, "#room-title")) === "Vorstandssitzung"),
      "the room is shown by its title",
    );
    assert.ok(
      await eventually(async () => /moderators know you are here/.test(await textOf(ben, "#waiting-text"))),
      "Ben's waiting screen says that a moderator is there",
    );
    assert.ok(
      await eventually(async () => /1 wartet/.test(await textOf(anna, "#call-people"))),
      "Anna's participants button says that someone waits",
    );
    await anna.click("#call-people");
    await anna.click("#knocking-list li:has-text('Ben') >> text=Hereinlassen");
    assert.ok(await shows(ben, "#call"), "Ben is let in");
    assert.ok(await flowing(ben), "Ben decodes Anna's video and hears her");

    // A knock while an error is on Anna's screen waits until she could read the error; it is
    // not lost. Anna sends chat faster than a room takes it: the refusal is an error.
    const clara = await join(browser, room, "Clara", { skipJoin: true });
    await anna.click("#call-chat");
    for (let i = 0; i < 12; i++) {
      await anna.fill("#chat-input", `Nachricht ${i}`);
      await anna.press("#chat-input", "Enter");
    }
    assert.ok(
      await eventually(async () => /nicht gesendet/.test(await textOf(anna, "#notice")), 5000),
      "Anna is told that her message was not sent",
    );
    await clara.click("#join-button");
    assert.ok(await shows(clara, "#waiting"));
    assert.ok(
      await eventually(async () => /Clara möchte hereinkommen/.test(await textOf(anna, "#notice")), 10000),
      "Anna is told that Clara knocks once the error has been shown",
    );
    await anna.click("#knocking-list li:has-text('Clara') >> text=Ablehnen");
    assert.ok(await shows(clara, "#ended"), "Clara is declined");
    assert.match(await textOf(clara, "#ended-heading"), /nicht hereingelassen/);
    for (const page of [anna, ben, clara]) await page.context().close();
  });

  test("hands in order, and a moderator mutes, removes and ends the meeting", async () => {
    const { server, browser } = running;
    const room = `${server.url}/verein/treffen`;
    const anna = await join(browser, room, "Anna");
    assert.ok(await shows(anna, "#call"));
    const ben = await join(browser, room, "Ben");
    assert.ok(await shows(ben, "#call"));
    const clara = await join(browser, room, "Clara", { locale: "en-US" });
    assert.ok(await shows(clara, "#call"));

    await ben.click("#call-hand");
    assert.ok(await eventually(async () => (await textOf(anna, '.tile:has-text("Ben") .hand')) === "Hand 1"));
    await clara.click("#call-hand");
    for (const page of [anna, ben]) {
      assert.ok(
        await eventually(async () => (await textOf(page, '.tile:has-text("Clara") .hand')) === "Hand 2"),
        "everyone sees Clara's hand second",
      );
    }
    assert.ok(
      await eventually(async () => (await textOf(anna, "#announce")) === "Clara hat die Hand gehoben."),
      "a raised hand is said, for those who cannot see the badges",
    );

    await anna.click("#call-people");
    // A moderator on a person's button keeps the place when the list is drawn again under it.
    await anna.focus("#people-list li:has-text('Clara') >> text=Entfernen");
    await ben.click("#call-hand");
    assert.ok(
      await eventually(async () => (await textOf(anna, '.tile:has-text("Clara") .hand')) === "Hand 1"),
      "Ben lowered his hand, and Clara's is first",
    );
    const focused = await anna.evaluate(() => {
      const element = document.activeElement;
      return `${element?.closest("li")?.querySelector("strong")?.textContent}: ${element?.textContent}`;
    });
    assert.equal(focused, "Clara: Entfernen", "the focus stays on Clara's Remove");
    await anna.screenshot({ path: path.join(ARTIFACTS, "participants-moderator.png") });
    await anna.click("#people-list li:has-text('Ben') >> text=Stummschalten");
    assert.ok(await eventually(async () => ben.evaluate(() => window.treffpunkt.audioMuted)), "Ben's microphone goes off");
    assert.ok(
      await eventually(async () => clara.isVisible('.tile:has-text("Ben") .badge:not(.hand)')),
      "Clara sees Ben muted",
    );

    await anna.click("#people-list li:has-text('Clara') >> text=Entfernen");
    assert.ok(await shows(clara, "#ended"), "Clara is removed");
    assert.match(await textOf(clara, "#ended-heading"), /removed you/);

    anna.once("dialog", (dialog) => dialog.accept());
    await anna.click("#end-meeting");
    assert.ok(await shows(ben, "#ended"), "the meeting ends for Ben");
    assert.match(await textOf(ben, "#ended-heading"), /für alle beendet/);
    for (const page of [anna, ben, clara]) await page.context().close();
  });
});
