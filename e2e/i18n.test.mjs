// The web client's dictionaries: German and English have the same keys with the same
// placeholders, and every text the page names (data-i18n) and every error code the server
// sends has one. Runs in Node (no browser): the dictionaries are plain data.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";

globalThis.location = { search: "" };
globalThis.navigator = { languages: ["de"], language: "de" };
const { STRINGS } = await import("../operator/web/i18n.js");
const web = new URL("../operator/web/", import.meta.url);

const placeholders = (text) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test("German and English have the same keys and placeholders", () => {
  const de = Object.keys(STRINGS.de).sort();
  const en = Object.keys(STRINGS.en).sort();
  assert.deepEqual(de.filter((k) => !en.includes(k)), [], "only in German");
  assert.deepEqual(en.filter((k) => !de.includes(k)), [], "only in English");
  for (const key of de) {
    assert.deepEqual(placeholders(STRINGS.de[key]), placeholders(STRINGS.en[key]), key);
  }
});

test("every text the page and the script name is in the dictionaries", async () => {
  const html = await readFile(new URL("index.html", web), "utf8");
  const files = (await readdir(web)).filter((file) => file.endsWith(".js") && file !== "i18n.js");
  assert.ok(files.includes("app.js") && files.length >= 5, `the client's scripts: ${files}`);
  const script = (await Promise.all(files.map((file) => readFile(new URL(file, web), "utf8")))).join("\n");
  const named = [
    ...[...html.matchAll(/data-i18n(?:-label)?="([^"]+)"/g)].map((m) => m[1]),
    ...[...script.matchAll(/\bt\("([^"]+)"/g)].map((m) => m[1]),
  ];
  const missing = [...new Set(named)].filter((key) => !(key in STRINGS.de));
  assert.deepEqual(missing, []);
});

test("every refusal code the server sends has a text", async () => {
  // The codes as the Rust sources define them: admission's refusals and the gateway's limits.
  const sources = await Promise.all(
    ["../operator/src/admission/refusal.rs", "../operator/src/gateway/limits.rs"].map((file) =>
      readFile(new URL(file, import.meta.url), "utf8"),
    ),
  );
  const codes = sources.flatMap((source) => [
    ...[...source.matchAll(/=> "([a-z]+(?:-[a-z]+)+)"/g)].map((m) => m[1]),
    ...[...source.matchAll(/pub const [A-Z_]+: &str = "([a-z-]+)"/g)].map((m) => m[1]),
  ]);
  assert.ok(codes.length > 15, `found the codes: ${codes}`);
  // And what the media node refuses in the call for something a person did: a chat message
  // among too many at once, a moderator's action from someone who no longer moderates.
  codes.push("chat", "not-moderator");
  const missing = codes.filter((code) => !(`error.${code}` in STRINGS.de));
  assert.deepEqual(missing, []);
});
