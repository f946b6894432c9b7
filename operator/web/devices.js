// Camera, microphone and speaker: asking for them, choosing among several, the microphone's
// level, and getting them back after a denied permission without reloading the page.
//
// The choice is made on the pre-join screen and, in the call, in the devices dialog: the same
// fields move between the two. A device switched in the call replaces the track that is being
// sent, so the others see and hear the new one without a new connection. The choice is kept
// only in this page.

import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

export const VIDEO_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 24 } };

/** What the app shares with this module: its state and what to do when a track changes. */
let app = null;
/** The chosen device ids by kind ("audioinput", "videoinput", "audiooutput"). */
const chosen = {};

export async function getMedia(constraints) {
  try {
    return await navigator.mediaDevices.getUserMedia(constraints);
  } catch (error) {
    return error;
  }
}

function constraintsFor(kind) {
  const id = chosen[kind === "audio" ? "audioinput" : "videoinput"];
  const base = kind === "audio" ? {} : { ...VIDEO_CONSTRAINTS };
  return id ? { ...base, deviceId: { exact: id } } : kind === "audio" ? true : base;
}

/** Asks for camera and microphone; explains plainly when they are denied or missing. */
export async function startDevices() {
  deviceNotice("");
  if (!navigator.mediaDevices?.getUserMedia) {
    deviceNotice(t("devicesMissing"));
    return new MediaStream();
  }
  let result = await getMedia({ audio: constraintsFor("audio"), video: constraintsFor("video") });
  if (result instanceof Error && result.name === "NotFoundError") {
    // One of the two may exist on its own.
    result = await getMedia({ audio: constraintsFor("audio") });
    if (result instanceof Error) result = await getMedia({ video: constraintsFor("video") });
  }
  if (result instanceof Error) {
    explain(result);
    return new MediaStream();
  }
  return result;
}

/** Asks for one device of `kind` ("audio" or "video"), as chosen; a track, or the error. */
export async function acquire(kind) {
  if (!navigator.mediaDevices?.getUserMedia) return new Error("NotSupported");
  const result = await getMedia({ [kind]: constraintsFor(kind) });
  if (result instanceof Error) return result;
  return (kind === "audio" ? result.getAudioTracks() : result.getVideoTracks())[0] ?? new Error("NotFound");
}

/** Tells why the devices cannot be used, with a way to try again. */
export function explain(error) {
  const denied = error.name === "NotAllowedError" || error.name === "SecurityError";
  deviceNotice(t(denied ? "devicesDenied" : "devicesMissing"));
}

/** Explains a camera or microphone problem until it is solved (empty text: solved). */
export function deviceNotice(text) {
  $("device-notice-text").textContent = text;
  $("device-notice").hidden = !text;
}

/**
 * Wires the device fields. `hooks`: `state` (the app's), `replaceTrack(kind, track)` which puts
 * a new track in place of the old one of that kind (in the preview and in what is sent), and
 * `retry()` which asks again for what is missing.
 */
export function setupDevices(hooks) {
  app = hooks;
  $("camera-select").addEventListener("change", (event) => switchDevice("video", event.target.value));
  $("mic-select").addEventListener("change", (event) => switchDevice("audio", event.target.value));
  $("speaker-select").addEventListener("change", (event) => chooseSpeaker(event.target.value));
  $("speaker-test").addEventListener("click", () => testSpeaker());
  $("retry-devices").addEventListener("click", () => app.retry());
  navigator.mediaDevices?.addEventListener?.("devicechange", () => listDevices());
  // A permission given later in the browser's settings brings the devices back by itself.
  for (const name of ["camera", "microphone"]) {
    navigator.permissions
      ?.query({ name })
      .then((status) => {
        status.addEventListener("change", () => {
          if (status.state === "granted") app.retry();
        });
      })
      .catch(() => {});
  }
}

/** Fills the device fields from what the browser offers, the ones in use selected. */
export async function listDevices() {
  if (!app || !navigator.mediaDevices?.enumerateDevices) return;
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const inUse = {
    audioinput: app.state.stream?.getAudioTracks()[0]?.getSettings().deviceId,
    videoinput: app.state.stream?.getVideoTracks()[0]?.getSettings().deviceId,
    audiooutput: chosen.audiooutput,
  };
  const fields = { videoinput: "camera-select", audioinput: "mic-select", audiooutput: "speaker-select" };
  for (const [kind, id] of Object.entries(fields)) {
    const select = $(id);
    const ofKind = devices.filter((device) => device.kind === kind && device.deviceId);
    select.replaceChildren(
      ...ofKind.map((device, index) => {
        const option = document.createElement("option");
        option.value = device.deviceId;
        option.textContent = device.label || t("deviceNumber", { n: index + 1 });
        option.selected = device.deviceId === (inUse[kind] ?? chosen[kind]);
        return option;
      }),
    );
    select.disabled = ofKind.length === 0;
  }
  // Choosing the speaker needs a browser that can, and more than one to choose from.
  const outputs = devices.filter((device) => device.kind === "audiooutput" && device.deviceId);
  $("speaker-field").hidden = !("setSinkId" in HTMLMediaElement.prototype) || outputs.length === 0;
}

/** Uses another camera or microphone; in the call the others get it at once. */
async function switchDevice(kind, deviceId) {
  chosen[kind === "audio" ? "audioinput" : "videoinput"] = deviceId;
  // A camera that is off stays off; the choice counts when it is switched on.
  if (kind === "video" && app.state.videoMuted) return;
  const track = await acquire(kind);
  if (track instanceof Error) {
    explain(track);
    return;
  }
  await app.replaceTrack(kind, track);
  if (kind === "audio") watchLevel();
  listDevices();
}

/** Plays everything from now on through the speaker `deviceId`. */
function chooseSpeaker(deviceId) {
  chosen.audiooutput = deviceId;
  for (const element of document.querySelectorAll("video, audio")) applySpeaker(element);
}

/** Sends what `element` plays to the chosen speaker. */
export function applySpeaker(element) {
  if (chosen.audiooutput && element.setSinkId) element.setSinkId(chosen.audiooutput).catch(() => {});
}

/** A short tone through the chosen speaker, to hear that it is the right one. */
function testSpeaker() {
  const context = audioContext();
  const oscillator = context.createOscillator();
  const gain = context.createGain();
  const out = context.createMediaStreamDestination();
  gain.gain.value = 0.2;
  oscillator.frequency.value = 660;
  oscillator.connect(gain).connect(out);
  const audio = new Audio();
  audio.srcObject = out.stream;
  applySpeaker(audio);
  audio.play().catch(() => {});
  oscillator.start();
  oscillator.stop(context.currentTime + 0.6);
  oscillator.addEventListener("ended", () => {
    audio.srcObject = null;
  });
}

// ------------------------------------------------------------------------------------------
// The microphone's level
// ------------------------------------------------------------------------------------------

let context = null;
let level = null;

function audioContext() {
  context ??= new AudioContext();
  // A browser may keep a context asleep until the first click; it wakes when it may.
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

/**
 * Shows the microphone's level in the meter while the pre-join screen or the devices dialog is
 * open (a switched-off microphone shows none). `app.state.micLevel` holds the latest value.
 */
export function watchLevel() {
  stopLevel();
  const track = app?.state.stream?.getAudioTracks()[0];
  if (!track) return;
  const ctx = audioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const sample of samples) sum += sample * sample;
    // Speech sits around 0.05-0.2 RMS; scaled so that it fills most of the meter.
    const value = track.enabled ? Math.min(1, Math.sqrt(sum / samples.length) * 5) : 0;
    app.state.micLevel = value;
    $("mic-level").value = value;
  }, 100);
  level = { source, timer };
}

export function stopLevel() {
  if (!level) return;
  clearInterval(level.timer);
  level.source.disconnect();
  level = null;
  $("mic-level").value = 0;
  // An idle context still costs the browser's audio service; it sleeps until needed again.
  context?.suspend().catch(() => {});
}

/** Opens the devices dialog in the call, with the fields and the meter. */
export function openDevicesDialog() {
  const dialog = $("devices-dialog");
  $("devices-dialog-body").append($("devices"));
  dialog.showModal();
  listDevices();
  watchLevel();
  dialog.addEventListener(
    "close",
    () => {
      stopLevel();
      $("lobby-devices").append($("devices"));
    },
    { once: true },
  );
}
