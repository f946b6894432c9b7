// Protected rooms as people meet them in the browser: a password room asks for its password on
// the pre-join screen (wrong, then right), and an invite-only room opens from the link that
// `treffpunkt invite` makes, and not without it. Standalone mode is seeded with the same
// manifests a tenant's admins apply with kubectl.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";

import { ARTIFACTS, binary, decodesAndHears, eventually, join, standaloneWithBrowser } from "./harness.mjs";

const MANIFESTS = `
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata: {name: verein}
spec: {displayName: Sportverein}
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata: {name: training, namespace: tenant-verein}
spec:
  access: Password
  passwordSecretRef: {name: training-passwort, key: password}
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata: {name: vorstand, namespace: tenant-verein}
spec: {access: InviteOnly}
---
apiVersion: v1
kind: Secret
metadata: {name: training-passwort, namespace: tenant-verein}
stringData: {password: Aufschlag}
---
apiVersion: v1
kind: Secret
metadata: {name: treffpunkt-signing-key, namespace: tenant-verein}
stringData:
  key: "the club's own signing key, long enough"
`;

const manifests = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "treffpunkt-access-")), "verein.yaml");
fs.writeFileSync(manifests, MANIFESTS);

/** The text of the page's notice, once it matches `pattern`. */
async function noticeMatches(page, pattern) {
  return eventually(async () => pattern.test((await page.textContent("#notice")) || ""), 10000);
}

describe("protected rooms in the browser", () => {
  const running = standaloneWithBrowser(["--manifests", manifests]);

  test("a password room asks for its password, refuses a wrong one and opens with the right one", async () => {
    const { server, browser } = running;
    const room = `${server.url}/verein/training`;
    const anna = await join(browser, room, "Anna");
    assert.ok(await noticeMatches(anna, /Passwort geschützt/), "the German page asks for the password");
    assert.equal(await anna.isVisible("#room-password"), true, "the password field appears");
    assert.equal(await anna.evaluate(() => document.activeElement?.id), "room-password", "and has the cursor");
    await anna.screenshot({ path: path.join(ARTIFACTS, "password-prompt.png") });

    await anna.fill("#room-password", "Netz");
    await anna.click("#join-button");
    assert.ok(await noticeMatches(anna, /Passwort stimmt nicht/), "a wrong password is refused");
    assert.equal(await anna.isVisible("#lobby"), true, "and the page stays on the pre-join screen");

    await anna.fill("#room-password", "Aufschlag");
    await anna.click("#join-button");
    assert.ok(await eventually(async () => anna.isVisible("#call")), "the right password lets Anna in");

    const ben = await join(browser, room, "Ben", { locale: "en-US" });
    assert.ok(await noticeMatches(ben, /protected by a password/), "the English page asks in English");
    await ben.fill("#room-password", "Aufschlag");
    await ben.click("#join-button");
    assert.ok(await eventually(async () => ben.isVisible("#call")), "Ben is in");
    for (const [page, name] of [[anna, "Anna"], [ben, "Ben"]]) {
      const flowing = await eventually(async () => {
        const now = await decodesAndHears(page);
        return now.video && now.audio;
      });
      assert.ok(flowing, `${name} decodes the other's video and hears them`);
    }
    for (const page of [anna, ben]) await page.context().close();
  });

  test("an invite-only room opens from its invitation link and not without it", async () => {
    const { server, browser } = running;
    const room = `${server.url}/verein/vorstand`;
    const uninvited = await join(browser, room, "Eve");
    assert.ok(await noticeMatches(uninvited, /nur mit einer Einladung/), "without the link, the page says why");
    assert.equal(await uninvited.isVisible("#lobby"), true);

    const invite = (extra = []) =>
      execFileSync(binary(), ["invite", "verein", "vorstand", "--manifests", manifests, "--url", room, ...extra], {
        encoding: "utf8",
      }).trim();
    const link = invite();
    assert.match(link, /#invite=/);
    const invited = await join(browser, link, "Clara");
    assert.ok(await eventually(async () => invited.isVisible("#call")), "the link lets Clara in");

    // A guest may not invite others into this room; the chair, who came with a moderator's
    // link, copies a fresh guest invitation in the call (never her own link).
    await invited.click("#call-more");
    await invited.click("#call-invite");
    assert.ok(await noticeMatches(invited, /Das darf nur die Moderation/), "a guest is told that only moderators invite");
    const chairLink = invite(["--moderator"]);
    const chair = await join(browser, chairLink, "Vorsitz", { permissions: ["camera", "microphone", "clipboard-read", "clipboard-write"] });
    assert.ok(await eventually(async () => chair.isVisible("#call")), "the chair is in");
    await chair.click("#call-more");
    await chair.click("#call-invite");
    assert.ok(await noticeMatches(chair, /Einladung ist kopiert\. Sie gilt bis/), "the chair is told how long it is valid");
    const copied = await chair.evaluate(() => navigator.clipboard.readText());
    assert.match(copied, /\/verein\/vorstand#invite=/, "the clipboard holds an invitation link");
    assert.notEqual(copied, chairLink, "not the chair's own moderator link");
    const guest = await join(browser, copied, "Dora");
    assert.ok(await eventually(async () => guest.isVisible("#call")), "the copied link lets Dora in");
    assert.equal(await guest.evaluate(() => document.getElementById("moderator-tools").hidden), true, "as a guest");
    for (const page of [uninvited, invited, chair, guest]) await page.context().close();
  });

  test("the start page offers the other language, keeps it into the room, and says when there is no public space", async () => {
    const { server, browser } = running;
    const context = await browser.newContext({ locale: "de-DE" });
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    assert.equal(await page.textContent("h1:visible"), "Videotreffen für alle");
    assert.equal(await page.textContent("#language-switch"), "English");
    await page.click("#language-switch");
    assert.ok(
      await eventually(async () => (await page.textContent("h1:visible")) === "Video meetings for everyone"),
      "the page is in English",
    );
    await page.fill("#room-name", "Chor");
    await page.click("#landing-form button[type=submit]");
    assert.ok(
      await eventually(async () => (await page.textContent("#lobby-heading")) === "Ready to join?"),
      "and so is the room's page",
    );
    assert.match(page.url(), /\/public\/chor\?lang=en$/);
    assert.equal(await page.textContent("#language-switch"), "Deutsch");

    // A platform may run without a public space (the chart's publicTenant.enabled: false);
    // standalone mode always has one, so its absence is the answer made here.
    await context.route("**/api/v1/tenants/public", (route) => route.fulfill({ status: 404, body: "" }));
    await page.goto(`${server.url}/`);
    assert.ok(await eventually(async () => page.isVisible("#no-public-space")), "the page says there is none");
    assert.equal(await page.isVisible("#landing-form"), false, "and offers no form that leads nowhere");
    await context.close();
  });
});
