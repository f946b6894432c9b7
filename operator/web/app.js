// Treffpunkt's web client: no build step, no third-party host, no account.
//
// Screens: the landing page (choose a room name; the city's, or a tenant's in its colours), the
// pre-join screen (name, camera preview, devices and the microphone's level), the lobby's
// waiting screen, the call (a gallery or a speaker view of everyone with their names, a compact
// bar of buttons with keyboard shortcuts), and the page after leaving. Signalling is
// JSON over one WebSocket to the gateway; media goes over one RTCPeerConnection to the media
// node that hosts the room. The client offers once, for what it sends: the microphone, the
// camera in three simulcast layers, and a screen share that stays empty until it is used.
// Afterwards the node offers whenever the set of people it forwards changes, and the client
// answers.
//
// The node chooses which layer of each video this client receives. The client tells it how
// large it shows each video (so a small tile gets a small layer), and whether it wants audio
// only; the node tells it which of its own layers anybody needs, which videos it paused
// because the line is too slow, and who speaks. Chat messages travel the same socket and are
// kept only in this page.
//
// A large room (a council session streamed to hundreds, a town meeting) shows on its grid only
// who is on stage: whoever shows a camera or a screen, speaks or spoke last, or is shown large,
// at most a few dozen; one tile counts the others, who are listed under "Participants". Their
// comings and goings are not announced one by one.

import { applyBranding } from "./branding.js";
import {
  acquire,
  applySpeaker,
  deviceNotice,
  explain,
  listDevices,
  openDevicesDialog,
  setupDevices,
  startDevices,
  stopLevel,
  VIDEO_CONSTRAINTS,
  watchLevel,
} from "./devices.js";
import { t, errorText, keepingLanguage, otherLanguage, translatePage } from "./i18n.js";
import { arrange } from "./layout.js";
import { handleModeration, render as renderModeration, setupModeration, welcomed } from "./moderation.js";
import { setupShortcuts } from "./shortcuts.js";

const $ = (id) => document.getElementById(id);

const path = location.pathname.split("/").filter(Boolean);

/** Everything the client knows; also exposed as `window.treffpunkt` for diagnostics and tests. */
const state = {
  tenant: path.length >= 1 && path.length <= 2 ? path[0] : null,
  room: path.length === 2 ? path[1] : null,
  /** The invitation of an invitation link (`#invite=...`): in the fragment, so it never
   * reaches a server's log or another site. */
  invite: new URLSearchParams(location.hash.slice(1)).get("invite"),
  ws: null,
  /** Signalling sockets that failed in a row (or whose resume nobody answered). */
  socketRetries: 0,
  /** A resume was sent on the socket and not answered yet. */
  resumePending: false,
  pc: null,
  /** TURN servers with credentials, from the gateway's `session` message. */
  iceServers: [],
  me: null,
  joined: false,
  leaving: false,
  stream: null,
  audioMuted: false,
  videoMuted: false,
  transceivers: { audio: null, video: null, screen: null },
  /** The shared screen's track while sharing. */
  screenTrack: null,
  /** Receive audio only (and send no camera). */
  audioOnly: false,
  /** The participant id of the dominant speaker, and of the tile pinned large. */
  speaker: null,
  pinned: null,
  /** "gallery": every tile the same size; "speaker": the speaker large, the others small. */
  view: "gallery",
  /** The others, in the order they came; each with `spokeAt` once they spoke. */
  participants: new Map(),
  /** Unread chat messages while the chat is closed. */
  unread: 0,
  /** Streams that arrived before their participant's roster entry, by participant id. */
  pendingStreams: new Map(),
  /** What happened to the session, newest last (event names only, no personal data). */
  log: [],
  /** Resolves when the camera and microphone have answered. */
  devicesReady: Promise.resolve(),
  /** Signalling is handled strictly in order: each message waits for the previous one. */
  queue: Promise.resolve(),
};
window.treffpunkt = state;

/** Records a step of the session for diagnostics (kept in memory, at most 50). */
function trace(event) {
  state.log.push(`${Math.round(performance.now())} ${event}`);
  if (state.log.length > 50) state.log.shift();
}

// ------------------------------------------------------------------------------------------
// Screens and notices
// ------------------------------------------------------------------------------------------

/** Whether the focus is on something that is shown. */
function visiblyFocused() {
  const focused = document.activeElement;
  return Boolean(focused && focused !== document.body && focused.offsetParent !== null);
}

function show(screen) {
  for (const id of ["landing", "lobby", "waiting", "call", "ended"]) $(id).hidden = id !== screen;
  // Switching the language reloads the page: offered only before joining.
  $("language-switch").hidden = screen !== "landing" && screen !== "lobby";
  // The call fills the window exactly: the tiles are sized to fit it.
  document.body.classList.toggle("in-call", screen === "call");
  if (screen === "lobby") watchLevel();
  else stopLevel();
}

let noticeTimer = null;
/** When the notice last changed, and how long an error stays before routine news may replace it. */
let noticeShownAt = 0;
const ERROR_READING_MS = 4000;
/**
 * Says `text` to screen readers, errors at once: the live regions are always there, and their
 * text is set a moment after it is cleared, so that the same words twice are read twice.
 */
function announce(text, kind) {
  const region = $(kind === "error" ? "announce-alert" : "announce");
  region.textContent = "";
  if (text) setTimeout(() => (region.textContent = text), 100);
}

/** A routine message that waits for an error's reading time, and the timer that shows it. */
let heldNotice = null;
let heldTimer = null;

/** Shows the routine message that waits once `ms` have passed. */
function holdFor(ms) {
  clearTimeout(heldTimer);
  heldTimer = setTimeout(() => {
    const held = heldNotice;
    heldNotice = null;
    if (held) notify(held.text, { sticky: held.sticky });
  }, ms + 50);
}

/** Shows a message to everyone, and says it to screen-reader users. */
function notify(text, { sticky = false, kind = "info" } = {}) {
  const bar = $("notice");
  // A routine message ("Anna knocks.") does not push aside an error that came a moment ago (the
  // error would vanish before anyone could read it): it waits until the error has been read.
  // Of several that wait, the latest is shown; one that waits waits for a newer error too.
  const shownFor = performance.now() - noticeShownAt;
  const errorShown = !bar.hidden && bar.dataset.kind === "error" && shownFor < ERROR_READING_MS;
  if (kind === "info" && text && errorShown) {
    heldNotice = { text, sticky };
    holdFor(ERROR_READING_MS - shownFor);
    return;
  }
  if (kind === "info" || !text) heldNotice = null;
  if (heldNotice) holdFor(ERROR_READING_MS);
  else clearTimeout(heldTimer);
  noticeShownAt = performance.now();
  clearTimeout(noticeTimer);
  bar.textContent = text;
  bar.dataset.kind = kind;
  bar.hidden = !text;
  announce(text, kind);
  if (text && !sticky) noticeTimer = setTimeout(() => (bar.hidden = true), 6000);
}

// ------------------------------------------------------------------------------------------
// Landing: choose a room
// ------------------------------------------------------------------------------------------

/** Turns what someone typed into a room name: "Skatclub Mittwoch" -> "skatclub-mittwoch". */
function slug(text) {
  return text
    .toLowerCase()
    .replace(/ä/g, "ae").replace(/ö/g, "oe").replace(/ü/g, "ue").replace(/ß/g, "ss")
    .normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/g, "");
}

/** The start page: the city's (`tenant` null: rooms of the public space) or a tenant's. */
async function setupLanding(tenant) {
  show("landing");
  localizeValidation($("room-name"), "roomNameRequired");
  $("landing-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = slug($("room-name").value);
    if (!name) {
      notify(t("roomNameInvalid"), { kind: "error" });
      $("room-name").focus();
      return;
    }
    location.assign(keepingLanguage(`/${tenant ?? "public"}/${name}`));
  });
  $("room-name").focus();
  // The start page opens rooms in the public space: it says so when there is none.
  const look = await applyBranding(tenant ?? "public");
  if (look === null && !tenant) {
    $("landing-form").hidden = true;
    $("no-public-space").hidden = false;
  } else if (look && !look.adhocRooms) {
    $("room-name-hint").hidden = true;
    $("room-name-admins").hidden = false;
  }
}

/** The link to the page in the other language, named in that language. */
function setupLanguageSwitch() {
  const other = otherLanguage();
  const link = $("language-switch");
  link.textContent = other.name;
  link.lang = other.lang;
  link.hreflang = other.lang;
  link.href = other.href;
  link.setAttribute("aria-label", `${other.name}: ${t("languageSwitchLabel")}`);
}

/**
 * The browser's own message for an empty or too long field, in the page's language rather
 * than the browser's.
 */
function localizeValidation(input, missingKey) {
  input.addEventListener("invalid", () => {
    input.setCustomValidity("");
    if (input.validity.valueMissing) input.setCustomValidity(t(missingKey));
    else if (input.validity.tooLong) input.setCustomValidity(t("fieldTooLong"));
  });
  input.addEventListener("input", () => input.setCustomValidity(""));
}

// ------------------------------------------------------------------------------------------
// Devices
// ------------------------------------------------------------------------------------------

/**
 * The camera's simulcast layers, lowest first, as the node expects them: about 180p, 360p and
 * 720p. The node asks for the ones somebody needs and switches each receiver between them.
 */
const CAMERA_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

function audioTrack() {
  return state.stream?.getAudioTracks()[0] ?? null;
}

function videoTrack() {
  return state.stream?.getVideoTracks()[0] ?? null;
}

/**
 * The microphone and camera buttons. On the pre-join screen they say what a click does; in the
 * call's compact bar they name the device, show its state (pressed: on, crossed out: off) and
 * say what a click does when pointed at.
 */
function renderToggles() {
  const toggles = [
    ["lobby-mic", "call-mic", state.audioMuted, state.audioMuted ? "micOn" : "micOff", "M"],
    ["lobby-cam", "call-cam", state.videoMuted, state.videoMuted ? "camOn" : "camOff", "V"],
  ];
  for (const [lobby, call, off, action, key] of toggles) {
    // The pre-join button's words say what a click does, so it has no pressed state, which
    // would say the opposite ("Mute microphone, pressed").
    $(lobby).textContent = t(action);
    $(lobby).classList.toggle("off", off);
    $(call).classList.toggle("off", off);
    $(call).setAttribute("aria-pressed", String(!off));
    $(call).title = t("withShortcut", { action: t(action), key });
    // Without any device there is nothing to switch; a denied one may be asked for again.
    for (const id of [lobby, call]) $(id).disabled = !navigator.mediaDevices?.getUserMedia;
  }
  $("preview-off").hidden = !state.videoMuted;
  renderSelf();
}

/** Microphone on or off; without a microphone yet (denied before), asks for it again. */
async function toggleMic() {
  const track = audioTrack();
  if (!track) {
    await bringBack("audio");
    return;
  }
  state.audioMuted = !state.audioMuted;
  track.enabled = !state.audioMuted;
  sendMediaState();
  renderToggles();
}

/** Camera off stops the camera (its light goes out); camera on asks for it again. */
async function toggleCam() {
  if (!state.videoMuted) {
    const track = videoTrack();
    if (track) {
      track.stop();
      state.stream.removeTrack(track);
    }
    state.videoMuted = true;
    await state.transceivers.video?.sender.replaceTrack(null);
    sendMediaState();
    renderToggles();
  } else {
    await bringBack("video");
  }
}

/** Asks for the microphone or camera again and uses it at once; explains when it is denied. */
async function bringBack(kind) {
  const track = await acquire(kind);
  if (track instanceof Error) {
    explain(track);
    return false;
  }
  await replaceTrack(kind, track);
  if (audioTrack() && (videoTrack() || state.videoMuted)) deviceNotice("");
  return true;
}

/**
 * Puts `track` in place of this page's track of its kind: in the preview, the own tile and
 * what is sent. The microphone keeps its muted state; a camera that comes is on.
 */
async function replaceTrack(kind, track) {
  state.stream ??= new MediaStream();
  const old = kind === "audio" ? audioTrack() : videoTrack();
  if (old) {
    old.stop();
    state.stream.removeTrack(old);
  }
  state.stream.addTrack(track);
  if (kind === "audio") {
    if (!old) state.audioMuted = false;
    track.enabled = !state.audioMuted;
    await state.transceivers.audio?.sender.replaceTrack(track);
  } else {
    state.videoMuted = false;
    state.hadCamera = true;
    await state.transceivers.video?.sender.replaceTrack(track);
  }
  $("preview").srcObject = state.stream;
  const self = document.querySelector('.tile[data-participant="self"] video');
  if (self) self.srcObject = state.stream;
  if (kind === "audio" && !$("lobby").hidden) watchLevel();
  sendMediaState();
  renderToggles();
  listDevices();
}

/** Asks again for whatever is missing, after a permission was denied and then given. */
async function retryDevices() {
  const missing = [...(audioTrack() ? [] : ["audio"]), ...(videoTrack() || state.hadCamera ? [] : ["video"])];
  let gotAny = false;
  for (const kind of missing) gotAny = (await bringBack(kind)) || gotAny;
  if (gotAny) notify(t("devicesBack"));
}

function sendMediaState() {
  if (state.joined) {
    send({
      type: "media",
      audioMuted: state.audioMuted,
      videoMuted: state.videoMuted,
      screenSharing: Boolean(state.screenTrack),
    });
  }
}

function stopDevices() {
  stopLevel();
  for (const track of state.stream?.getTracks() ?? []) track.stop();
  state.stream = null;
}

// ------------------------------------------------------------------------------------------
// Lobby
// ------------------------------------------------------------------------------------------

async function setupLobby() {
  $("room-title").textContent = state.room;
  document.title = `${state.room} – Treffpunkt`;
  show("lobby");
  $("lobby-mic").addEventListener("click", toggleMic);
  $("call-mic").addEventListener("click", toggleMic);
  $("lobby-cam").addEventListener("click", toggleCam);
  $("call-cam").addEventListener("click", toggleCam);
  $("leave").addEventListener("click", () => leave());
  // A closed tab leaves, so that the others see it go at once: a connection that only breaks
  // off is kept for a while, in case its page comes back.
  window.addEventListener("pagehide", () => {
    if (state.joined && !state.leaving) send({ type: "leave" });
  });
  $("call-screen").addEventListener("click", () => toggleScreen());
  $("call-audio-only").addEventListener("click", () => toggleAudioOnly());
  $("call-chat").addEventListener("click", () => toggleChat());
  $("call-more").addEventListener("click", () => toggleMore());
  $("call-view").addEventListener("click", () => {
    state.view = state.view === "gallery" ? "speaker" : "gallery";
    renderCallButtons();
    layout();
  });
  $("call-devices").addEventListener("click", () => {
    toggleMore(false);
    openDevicesDialog();
  });
  // A choice in the menu, or a click elsewhere, closes it. The chosen item goes with the menu,
  // so the keyboard's place goes back to the menu's button, unless the choice took it elsewhere
  // (a dialog, the chat).
  document.addEventListener("click", (event) => {
    const inMenu = event.target.closest?.("#more-menu button");
    if (inMenu || (!$("more-menu").hidden && !event.target.closest?.("#more-menu, #call-more"))) {
      toggleMore(false);
      if (inMenu && !visiblyFocused()) $("call-more").focus();
    }
  });
  // A dialog gives the focus back to what had it, which may have been hidden since (an item of
  // the menu): then to the menu's button.
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("close", () => setTimeout(() => visiblyFocused() || $("call-more").focus(), 0));
  }
  // Escape closes the menu and gives the focus back to its button.
  $("more-menu").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      toggleMore(false);
      $("call-more").focus();
    }
  });
  setupDevices({ state, replaceTrack, retry: retryDevices });
  setupShortcuts({
    active: () => state.joined && !$("call").hidden,
    actions: { m: toggleMic, v: toggleCam, h: () => $("call-hand").click(), c: () => toggleChat() },
  });
  localizeValidation($("display-name"), "nameRequired");
  new ResizeObserver(() => layout()).observe($("grid"));
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  if (!navigator.mediaDevices?.getDisplayMedia) $("call-screen").hidden = true;
  setupModeration({
    state,
    send,
    notify,
    announce,
    show,
    leave: () => leave(),
    muteMic: () => !state.audioMuted && toggleMic(),
    stopCamera: () => !state.videoMuted && toggleCam(),
    stopScreen: () => stopScreen(),
    focusMic: () => $("call-mic").focus(),
  });
  $("rejoin").addEventListener("click", () => rejoin());
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    join();
  });
  const remembered = sessionStorage.getItem("treffpunkt.name");
  if (remembered) $("display-name").value = remembered;
  $("display-name").focus();
  applyBranding(state.tenant);
  await preparePreview();
}

/** Asks for the devices; joining waits for the answer so that nobody joins without them. */
function preparePreview() {
  state.devicesReady = (async () => {
    state.audioMuted = false;
    state.videoMuted = false;
    state.stream = await startDevices();
    state.hadCamera = Boolean(videoTrack());
    if (!videoTrack()) state.videoMuted = true;
    if (!audioTrack()) state.audioMuted = true;
    $("preview").srcObject = state.stream;
    renderToggles();
    await listDevices();
    if (!$("lobby").hidden) watchLevel();
  })();
  return state.devicesReady;
}

// ------------------------------------------------------------------------------------------
// Signalling
// ------------------------------------------------------------------------------------------

function send(message) {
  if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

async function join() {
  trace("join");
  const name = $("display-name").value.trim();
  if (!name) {
    notify(errorText("name-empty"), { kind: "error" });
    $("display-name").focus();
    return;
  }
  sessionStorage.setItem("treffpunkt.name", name);
  $("join-button").disabled = true;
  $("join-button").textContent = t("joining");
  await state.devicesReady;
  notify(t("connecting"), { sticky: true });
  state.leaving = false;
  state.ticket = null;
  openSocket(() => joinMessage(name));
}

/**
 * What this page understands beyond the forms every release understands: a gateway of a later
 * release speaks the older forms with a page that does not name them (one loaded before an
 * upgrade and still open).
 */
const FEATURES = ["roster-batches"];

/** The join under `name`, with what a protected room asks: its password, the invitation. */
function joinMessage(name) {
  const message = {
    type: "join",
    name,
    audioMuted: state.audioMuted,
    videoMuted: state.videoMuted,
    features: FEATURES,
  };
  const password = $("room-password").value;
  if (!$("password-field").hidden && password) message.password = password;
  if (state.invite) message.invite = state.invite;
  return message;
}

/**
 * Opens the signalling socket and sends `first()` once it is open. When an open socket of a
 * joined participant drops, the session is resumed with its ticket: the media connection goes
 * on meanwhile, so the call is not interrupted.
 */
function openSocket(first) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/rooms/${state.tenant}/${state.room}/signal`);
  state.ws = ws;
  let opened = false;
  ws.addEventListener("open", () => {
    opened = true;
    const message = first();
    // A resume counts as a try until the server answers it.
    state.resumePending = message.type === "resume";
    if (!state.resumePending) state.socketRetries = 0;
    send(message);
  });
  ws.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message?.type === "error" && !state.joined && state.ws === ws) {
      // Refused before joining (the gateway may be closing the socket itself: too many
      // connections, a busy server, too slow to join). The refusal is shown; the next attempt
      // opens a socket of its own, so this one is done and its closing says nothing more.
      state.ws = null;
      ws.close();
    }
    state.queue = state.queue.then(() => handle(message)).catch((error) => console.warn("signalling:", error));
  });
  ws.addEventListener("close", (event) => {
    trace(`socket closed ${event.code}${state.ws === ws ? "" : " (old)"}`);
    if (state.ws !== ws || state.leaving) return;
    if (state.joined && state.ticket) resumeSocket(opened && !state.resumePending);
    else if (state.joined) ended("connection-lost");
    else resetJoinButton(errorText("unavailable"));
  });
}

/** Refusals of a resume that may pass: the socket is opened again to try once more. */
const RESUME_RETRIES = new Set(["unavailable", "platform-full", "too-many-joins"]);

/** Tries to get the signalling socket back, for about half a minute. */
function resumeSocket(wasOpen) {
  state.socketRetries = wasOpen ? 1 : state.socketRetries + 1;
  if (state.socketRetries > 12) {
    ended("connection-lost");
    return;
  }
  notify(t("reconnecting"), { sticky: true, kind: "warning" });
  const delay = Math.min(250 * 2 ** (state.socketRetries - 1), 4000);
  setTimeout(() => {
    if (state.leaving || !state.joined) return;
    trace("resume");
    openSocket(() => ({ type: "resume", ticket: state.ticket, features: FEATURES }));
  }, delay);
}

/** Shows the room's password field on the pre-join screen and puts the cursor there. */
function askPassword() {
  $("password-field").hidden = false;
  $("moderator-toggle").setAttribute("aria-expanded", "true");
  const input = $("room-password");
  input.value = "";
  input.focus();
}

function resetJoinButton(message) {
  $("join-button").disabled = false;
  $("join-button").textContent = t("join");
  if (message) notify(message, { sticky: true, kind: "error" });
}

async function handle(message) {
  if (handleModeration(message)) return;
  switch (message.type) {
    case "welcome":
      return welcome(message);
    case "session":
      // The session is admitted (resumed or moved): the socket is up for good.
      state.resumePending = false;
      state.socketRetries = 0;
      state.ticket = message.ticket;
      // The platform's TURN servers, with fresh credentials: the next media connection uses
      // them when neither UDP nor TCP reaches the media node.
      state.iceServers = message.iceServers ?? [];
      // A room with a title of its own is shown by it (only to those let in).
      if (message.roomTitle) {
        $("room-title").textContent = message.roomTitle;
        document.title = `${message.roomTitle} – Treffpunkt`;
      }
      return;
    case "reconnect":
      // The session moved to another media node: a new media connection follows.
      trace("reconnect");
      closeMedia();
      notify(t("moving"), { sticky: true, kind: "warning" });
      return;
    case "offer":
      return answerOffer(message.sdp);
    case "answer":
      return state.pc?.setRemoteDescription({ type: "answer", sdp: withOpusDtx(message.sdp) });
    case "candidate":
      return state.pc?.addIceCandidate({
        candidate: message.candidate,
        sdpMid: message.sdpMid,
        sdpMLineIndex: message.sdpMLineIndex,
      });
    case "participant-joined":
      if (addParticipant(message.participant) && !isLargeRoom()) notify(t("joined", { name: message.participant.name }));
      return;
    case "participants-joined": {
      // The room's people on another media node, come at once when the room spread to this
      // page's node: laid out once, like a welcome's.
      trace(`participants-joined ${message.participants.length}`);
      const added = addTogether(message.participants);
      if (added > 0 && !isLargeRoom()) notify(t("joinedSeveral", { count: added }));
      return;
    }
    case "participant-left":
      return removeParticipant(message.participantId, message.reason);
    case "connection":
      return participantConnection(message);
    case "media":
      return updateMedia(message);
    case "publish-layers":
      return publishLayers(message);
    case "video-state":
      return videoState(message);
    case "dominant-speaker":
      return dominantSpeaker(message.participantId);
    case "chat":
      return receiveChat(message);
    case "error":
      trace(`error ${message.code}`);
      if (message.code === "resume-refused" && state.joined) {
        // The session is gone for good: join afresh under the same name.
        send(joinMessage($("display-name").value.trim()));
        return;
      }
      if (state.joined && state.resumePending && RESUME_RETRIES.has(message.code)) {
        // Nothing took the session up this time: try again, a little later each time.
        state.ws?.close();
        return;
      }
      if (!state.joined) {
        resetJoinButton(errorText(message.code));
        if (message.code.startsWith("name-")) $("display-name").focus();
        if (message.code.startsWith("password-")) askPassword();
      } else {
        console.warn("server error", message.code, message.message);
      }
      return;
    case "closed":
      trace(`closed by server ${message.reason}`);
      return ended(message.reason);
    default:
      return;
  }
}

async function welcome(message) {
  trace(message.resumed ? "welcome (resumed)" : "welcome");
  state.me = message.participantId;
  state.joined = true;
  if (message.resumed) {
    // Same session, same media connection: only the roster may have changed meanwhile.
    const present = new Set(message.participants.map((p) => p.id));
    for (const id of [...state.participants.keys()]) if (!present.has(id)) removeParticipant(id, "left");
    for (const participant of message.participants) addParticipant(participant);
    welcomed(message);
    notify(t("connected"));
    return;
  }
  closeMedia();
  state.participants.clear();
  // The own tile stays: its video element is what keeps the camera's frames flowing between two
  // media connections (a camera left without any sink for a moment gave the next connection
  // its first frame only a second or more later).
  const own = document.querySelector('#grid > .tile[data-participant="self"]');
  $("grid").replaceChildren(...(own ? [own] : []));
  $("grid").setAttribute("aria-label", t("participants"));
  show("call");
  renderSelf();
  // Laid out once, not once per participant: a large room's welcome names hundreds.
  addTogether(message.participants);
  welcomed(message);
  if (message.participants.length === 0) notify(t("alone"), { sticky: true });
  else notify(t("connected"));
  await connectMedia();
  if (state.audioOnly) send({ type: "receive-settings", audioOnly: true });
  renderCallButtons();
  $("call-mic").focus();
}

async function connectMedia() {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", rtcpMuxPolicy: "require", iceServers: state.iceServers });
  state.pc = pc;
  const stream = new MediaStream();
  state.transceivers.audio = pc.addTransceiver(audioTrack() ?? "audio", { direction: "sendonly", streams: [stream] });
  state.transceivers.video = pc.addTransceiver(state.videoMuted ? "video" : (videoTrack() ?? "video"), {
    direction: "sendonly",
    streams: [stream],
    sendEncodings: CAMERA_LAYERS.map((layer) => ({ ...layer })),
  });
  // The screen share's section is there from the start, so that sharing needs no new offer.
  state.transceivers.screen = pc.addTransceiver(state.screenTrack ?? "video", {
    direction: "sendonly",
    streams: [new MediaStream()],
    sendEncodings: [{ maxBitrate: 1_500_000 }],
  });
  pc.addEventListener("track", (event) => {
    const stream = event.streams[0];
    if (!stream) return;
    const participant = state.participants.get(ownerOf(stream.id));
    if (participant) attachStream(participant, stream);
    else state.pendingStreams.set(stream.id, stream);
  });
  pc.addEventListener("connectionstatechange", () => {
    if (state.pc !== pc) return;
    trace(`connection ${pc.connectionState}`);
    if (pc.connectionState === "disconnected") notify(t("reconnecting"), { sticky: true, kind: "warning" });
    // "Connected" answers a warning (reconnecting, moving); after a first join the welcome
    // said it already, and it must not push aside what answered someone's own action meanwhile
    // (a copied invitation).
    else if (pc.connectionState === "connected" && !$("notice").hidden && $("notice").dataset.kind === "warning") {
      notify(t("connected"));
    }
    else if (pc.connectionState === "failed") {
      // The gateway moves the session when its node is gone; give that a chance first.
      notify(t("reconnecting"), { sticky: true, kind: "warning" });
      setTimeout(() => {
        if (state.pc === pc && pc.connectionState === "failed") ended("connection-lost");
      }, 20000);
    }
  });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const sources = {};
  for (const [source, transceiver] of [
    ["microphone", state.transceivers.audio],
    ["camera", state.transceivers.video],
    ["screen", state.transceivers.screen],
  ]) {
    if (transceiver.mid !== null) sources[transceiver.mid] = source;
  }
  send({ type: "offer", sdp: pc.localDescription.sdp, sources });
}

/**
 * Asks this browser to send Opus with DTX: in silence it then sends almost nothing, which a thin
 * line needs. The browser reads the wish from the node's description, so it is added there.
 */
function withOpusDtx(sdp) {
  const opus = new Set([...sdp.matchAll(/^a=rtpmap:(\d+) opus\/48000/gim)].map((m) => m[1]));
  return sdp.replace(/^a=fmtp:(\d+) ([^\r\n]*)/gm, (line, pt, params) =>
    opus.has(pt) && !/usedtx=/.test(params) ? `a=fmtp:${pt} ${params};usedtx=1` : line,
  );
}

/** The participant a received stream belongs to: its id is theirs, or theirs + ":screen". */
function ownerOf(streamId) {
  return streamId.endsWith(":screen") ? streamId.slice(0, -":screen".length) : streamId;
}

/** Encodes only the layers of a track that the node says somebody needs. */
async function publishLayers({ source, active }) {
  const transceiver = source === "screen" ? state.transceivers.screen : state.transceivers.video;
  const sender = transceiver?.sender;
  if (!sender) return;
  const parameters = sender.getParameters();
  if (!parameters.encodings?.length) return;
  let changed = false;
  parameters.encodings.forEach((encoding, index) => {
    const wanted = active[index] ?? true;
    if (encoding.active !== wanted) {
      encoding.active = wanted;
      changed = true;
    }
  });
  if (!changed) return;
  trace(`layers ${source} ${active.map((a) => (a ? 1 : 0)).join("")}`);
  try {
    await sender.setParameters(parameters);
  } catch (error) {
    console.warn("layers:", error);
  }
}

async function answerOffer(sdp) {
  const pc = state.pc;
  if (!pc) return;
  trace("offer");
  await pc.setRemoteDescription({ type: "offer", sdp: withOpusDtx(sdp) });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: "answer", sdp: pc.localDescription.sdp });
  trace("answer");
}

// ------------------------------------------------------------------------------------------
// The grid
// ------------------------------------------------------------------------------------------

/** A tile: the video, the initials while there is none, the name, and for others a button to
 * show it large. `kind` is "camera" or "screen". */
function tile(id, name, isSelf, kind = "camera") {
  const item = document.createElement("li");
  item.className = kind === "screen" ? "tile screen" : "tile";
  item.dataset.participant = id;
  item.dataset.kind = kind;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  if (isSelf || kind === "screen") video.muted = true;
  if (isSelf) video.classList.add("mirror");
  const placeholder = document.createElement("div");
  placeholder.className = "placeholder";
  placeholder.setAttribute("aria-hidden", "true");
  placeholder.textContent = initials(name);
  const label = document.createElement("p");
  label.className = "name";
  const nameText = document.createElement("span");
  nameText.textContent =
    kind === "screen" ? t("screenOf", { name }) : isSelf ? `${name} (${t("you")})` : name;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = t("mutedBadge");
  badge.hidden = true;
  const hand = document.createElement("span");
  hand.className = "badge hand";
  hand.hidden = true;
  label.append(nameText, " ", badge, " ", hand);
  const paused = document.createElement("p");
  paused.className = "paused-note";
  paused.hidden = true;
  item.append(video, placeholder, label, paused);
  if (!isSelf) {
    const pin = document.createElement("button");
    pin.type = "button";
    pin.className = "pin";
    pin.textContent = t("showLarge");
    // Whose tile it enlarges, for a screen reader's list of buttons.
    pin.dataset.whose = nameText.textContent;
    pin.setAttribute("aria-label", t("showLargeOf", { name: pin.dataset.whose }));
    pin.addEventListener("click", () => togglePin(`${id}/${kind}`));
    item.append(pin);
    viewportObserver.observe(video);
    applySpeaker(video);
  }
  return item;
}

function initials(name) {
  return name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((part) => part[0].toUpperCase())
    .join("");
}

function renderSelf() {
  if (!state.joined) return;
  let item = document.querySelector('.tile[data-participant="self"]');
  if (!item) {
    item = tile("self", $("display-name").value.trim(), true);
    $("grid").prepend(item);
  }
  const video = item.querySelector("video");
  if (video.srcObject !== state.stream) video.srcObject = state.stream;
  item.classList.toggle("video-off", state.videoMuted);
  item.querySelector(".badge").hidden = !state.audioMuted;
}

/** Adds `participants` with the grid laid out once, not once each; returns how many are new. */
function addTogether(participants) {
  let added = 0;
  layoutHeld = true;
  try {
    for (const participant of participants) if (addParticipant(participant)) added += 1;
  } finally {
    layoutHeld = false;
  }
  layout();
  return added;
}

/**
 * Shows a participant who came in; returns whether they are new. Someone already shown came in
 * again (their connection broke off, or their node was lost, and their page came back): the same
 * tile and video go on, with what they are now.
 */
function addParticipant(info) {
  const known = state.participants.get(info.id);
  if (known) {
    Object.assign(known, info, { interrupted: false });
    renderParticipant(known);
    renderModeration();
    return false;
  }
  const item = tile(info.id, info.name, false);
  const participant = { ...info, tile: item, stream: null, screenTile: null, paused: {} };
  state.participants.set(info.id, participant);
  $("grid").append(item);
  renderParticipant(participant);
  // The streams may have arrived before the roster entry.
  for (const id of [info.id, `${info.id}:screen`]) {
    const early = state.pendingStreams.get(id);
    if (early) {
      state.pendingStreams.delete(id);
      attachStream(participant, early);
    }
  }
  return true;
}

function attachStream(participant, stream) {
  let item = participant.tile;
  if (stream.id.endsWith(":screen")) {
    if (!participant.screenTile) {
      participant.screenTile = tile(participant.id, participant.name, false, "screen");
      $("grid").append(participant.screenTile);
    }
    item = participant.screenTile;
  } else {
    participant.stream = stream;
  }
  const video = item.querySelector("video");
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play?.().catch(() => {});
  renderParticipant(participant);
}

function renderParticipant(participant) {
  const camera = participant.paused.camera ?? "playing";
  const interrupted = Boolean(participant.interrupted);
  participant.tile.classList.toggle("video-off", Boolean(participant.videoMuted) || camera !== "playing");
  participant.tile.classList.toggle("interrupted", interrupted);
  participant.tile.querySelector(".badge").hidden = !participant.audioMuted;
  const note = participant.tile.querySelector(".paused-note");
  note.hidden = !interrupted && (participant.videoMuted || camera === "playing");
  note.textContent = interrupted
    ? t("connectionInterrupted")
    : camera === "paused-bandwidth"
      ? t("videoPausedBandwidth")
      : t("videoPausedLastN");
  if (participant.screenTile) {
    participant.screenTile.hidden = !participant.screenSharing;
    const screen = participant.paused.screen ?? "playing";
    participant.screenTile.classList.toggle("video-off", screen !== "playing");
    const screenNote = participant.screenTile.querySelector(".paused-note");
    screenNote.hidden = screen === "playing";
    screenNote.textContent = t("videoPausedBandwidth");
  }
  layout();
}

function updateMedia({ participantId, audioMuted, videoMuted, screenSharing }) {
  const participant = state.participants.get(participantId);
  if (!participant) return;
  const startedSharing = screenSharing && !participant.screenSharing;
  participant.audioMuted = audioMuted;
  participant.videoMuted = videoMuted;
  participant.screenSharing = Boolean(screenSharing);
  if (startedSharing) notify(t("sharesScreen", { name: participant.name }));
  renderParticipant(participant);
  renderModeration();
}

/** Someone's connection broke off (their page may be back within seconds), or is back. */
function participantConnection({ participantId, interrupted }) {
  const participant = state.participants.get(participantId);
  if (!participant) return;
  participant.interrupted = interrupted;
  renderParticipant(participant);
  if (interrupted && !isLargeRoom()) notify(t("interruptedParticipant", { name: participant.name }));
}

function removeParticipant(id, reason) {
  const participant = state.participants.get(id);
  if (!participant) return;
  state.participants.delete(id);
  participant.tile.remove();
  participant.screenTile?.remove();
  if (state.pinned?.startsWith(`${id}/`)) state.pinned = null;
  if (state.speaker === id) state.speaker = null;
  layout();
  renderModeration();
  if (!isLargeRoom()) notify(t(reason === "connection-lost" ? "lostParticipant" : "left", { name: participant.name }));
}

/** A video the node paused (the line is too slow, or only the latest speakers are sent). */
function videoState({ streamId, state: videoState }) {
  const participant = state.participants.get(ownerOf(streamId));
  if (!participant) return;
  const kind = streamId.endsWith(":screen") ? "screen" : "camera";
  const before = participant.paused[kind] ?? "playing";
  participant.paused[kind] = videoState;
  trace(`video ${kind} ${videoState}`);
  if (videoState === "paused-bandwidth" && before !== videoState) notify(t("videoPausedNotice"), { kind: "warning" });
  renderParticipant(participant);
}

function dominantSpeaker(participantId) {
  state.speaker = participantId;
  const participant = state.participants.get(participantId);
  if (participant) participant.spokeAt = performance.now();
  layout();
}

function togglePin(key) {
  state.pinned = state.pinned === key ? null : key;
  layout();
}

/** A room with more others than this shows on its grid only who is on stage. */
const STAGE_FROM = 12;
/** The most of the others a large room's stage shows. */
const STAGE_SIZE = 24;

function isLargeRoom() {
  return state.participants.size > STAGE_FROM;
}

/**
 * Who of the others is on a large room's stage: who is shown large, shares a screen, speaks,
 * spoke (the latest first) or shows a camera (the first to come first), at most `STAGE_SIZE`.
 * Null in a room small enough to show everyone.
 */
function stage() {
  if (!isLargeRoom()) return null;
  const pinned = (p) => Boolean(state.pinned?.startsWith(`${p.id}/`));
  const rank = (p) => [pinned(p) ? 0 : 1, p.screenSharing ? 0 : 1, p.id === state.speaker ? 0 : 1, -(p.spokeAt ?? 0)];
  const before = (a, b) => {
    const [x, y] = [rank(a), rank(b)];
    const at = x.findIndex((value, index) => value !== y[index]);
    return at < 0 ? 0 : x[at] - y[at];
  };
  const candidates = [...state.participants.values()].filter(
    (p) => pinned(p) || p.screenSharing || p.id === state.speaker || p.spokeAt || !p.videoMuted,
  );
  return new Set(candidates.sort(before).slice(0, STAGE_SIZE).map((p) => p.id));
}

/** The tile that counts those of a large room who are not on stage; it opens the list of all. */
function renderListeners(count) {
  let item = $("listeners");
  if (!item && count === 0) return;
  if (!item) {
    item = document.createElement("li");
    item.id = "listeners";
    item.className = "tile listeners";
    const open = document.createElement("button");
    open.type = "button";
    open.addEventListener("click", () => {
      if ($("people").hidden) $("call-people").click();
    });
    item.append(open);
  }
  item.hidden = count === 0;
  item.querySelector("button").textContent = t("moreListening", { count });
  // Always the last tile.
  if ($("grid").lastElementChild !== item) $("grid").append(item);
}

/** Set while many participants are added at once: they are laid out together afterwards. */
let layoutHeld = false;

/**
 * The gallery shows every tile alike, the speaker's outlined. One tile is shown large when it is
 * pinned or a screen is shared, and in the speaker view: whoever speaks (or spoke last). A large
 * room shows only its stage.
 */
function layout() {
  if (layoutHeld) return;
  const shown = stage();
  for (const participant of state.participants.values()) {
    participant.tile.hidden = shown !== null && !shown.has(participant.id);
  }
  renderListeners(shown === null ? 0 : state.participants.size - shown.size);
  const tiles = [...document.querySelectorAll("#grid .tile")];
  const key = (item) => `${item.dataset.participant}/${item.dataset.kind}`;
  const sharing = [...state.participants.values()].find((p) => p.screenSharing && p.screenTile);
  let featured = state.pinned;
  if (!featured && sharing) featured = `${sharing.id}/screen`;
  if (!featured && state.view === "speaker") {
    const speaker = state.participants.has(state.speaker) ? state.speaker : state.participants.keys().next().value;
    if (speaker) featured = `${speaker}/camera`;
  }
  for (const item of tiles) {
    const isFeatured = key(item) === featured;
    item.classList.toggle("featured", isFeatured);
    item.classList.toggle("speaking", item.dataset.kind === "camera" && item.dataset.participant === state.speaker);
    const pin = item.querySelector(".pin");
    if (pin) {
      const pinned = state.pinned === key(item);
      // Its words say what a click does; a pressed state would say the opposite.
      pin.textContent = pinned ? t("showNormal") : t("showLarge");
      const whose = { name: pin.dataset.whose };
      pin.setAttribute("aria-label", pinned ? t("showNormalOf", whose) : t("showLargeOf", whose));
    }
  }
  const featuredTile = tiles.find((item) => key(item) === featured) ?? null;
  if (featuredTile && $("grid").firstElementChild !== featuredTile) $("grid").prepend(featuredTile);
  arrange($("grid"), featuredTile);
  scheduleViewports();
}

// ------------------------------------------------------------------------------------------
// What this client receives: the size of each video, or audio only
// ------------------------------------------------------------------------------------------

let viewportTimer = null;
const viewportObserver = new ResizeObserver(() => scheduleViewports());

function scheduleViewports() {
  clearTimeout(viewportTimer);
  viewportTimer = setTimeout(sendViewports, 150);
}

/** Tells the node how tall each received video is shown, in device pixels (0: not shown). */
function sendViewports() {
  if (!state.joined) return;
  const viewports = [];
  for (const participant of state.participants.values()) {
    // In a large room, listeners without a video are left out: they would be most of the list.
    if (participant.tile.hidden && !participant.stream && !participant.screenTile) continue;
    for (const [item, streamId] of [
      [participant.tile, participant.id],
      [participant.screenTile, `${participant.id}:screen`],
    ]) {
      if (!item) continue;
      const video = item.querySelector("video");
      const shown = !item.hidden && video.clientHeight > 0;
      viewports.push({ streamId, height: shown ? Math.round(video.clientHeight * devicePixelRatio) : 0 });
    }
  }
  const text = JSON.stringify(viewports);
  if (text === state.lastViewports || viewports.length === 0) return;
  state.lastViewports = text;
  send({ type: "viewports", viewports });
}

/** Audio only: no video from the others, and the own camera off, for a weak connection. */
async function toggleAudioOnly() {
  state.audioOnly = !state.audioOnly;
  send({ type: "receive-settings", audioOnly: state.audioOnly });
  if (state.audioOnly && !state.videoMuted) await toggleCam();
  $("grid").classList.toggle("audio-only", state.audioOnly);
  renderCallButtons();
}

/** Shares a screen or window, or stops sharing. */
async function toggleScreen() {
  if (state.screenTrack) {
    stopScreen();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  } catch {
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (!track) return;
  track.contentHint = "detail";
  track.addEventListener("ended", () => stopScreen());
  state.screenTrack = track;
  await state.transceivers.screen?.sender.replaceTrack(track);
  sendMediaState();
  renderCallButtons();
}

function stopScreen() {
  const track = state.screenTrack;
  if (!track) return;
  state.screenTrack = null;
  track.stop();
  state.transceivers.screen?.sender.replaceTrack(null).catch(() => {});
  sendMediaState();
  renderCallButtons();
}

function renderCallButtons() {
  const screen = $("call-screen");
  // These buttons' words say what a click does, so they have no pressed state.
  screen.querySelector(".label").textContent = state.screenTrack ? t("stopSharing") : t("shareScreen");
  const audioOnly = $("call-audio-only");
  audioOnly.textContent = state.audioOnly ? t("videoAgain") : t("audioOnly");
  $("call-view").textContent = t(state.view === "gallery" ? "speakerView" : "galleryView");
  const chat = $("call-chat");
  chat.querySelector(".label").textContent = state.unread ? `${t("chat")} (${state.unread})` : t("chat");
  chat.setAttribute("aria-expanded", String(!$("chat").hidden));
  chat.title = t("withShortcut", { action: t("shortcutChat"), key: "C" });
}

/** Opens or closes the menu of what is used less often (`open` forces it). */
function toggleMore(open = $("more-menu").hidden) {
  $("more-menu").hidden = !open;
  $("call-more").setAttribute("aria-expanded", String(open));
  if (open) $("more-menu").querySelector("button:not([hidden])")?.focus();
}

// ------------------------------------------------------------------------------------------
// Chat: passed on by the node, kept only in this page
// ------------------------------------------------------------------------------------------

function toggleChat() {
  const panel = $("chat");
  panel.hidden = !panel.hidden;
  if (!panel.hidden) {
    state.unread = 0;
    $("chat-input").focus();
  }
  renderCallButtons();
  scheduleViewports();
}

function sendChat() {
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  send({ type: "chat", text });
  appendChat(t("you"), text, true);
  input.value = "";
  input.focus();
}

function receiveChat({ name, text }) {
  appendChat(name, text, false);
  if ($("chat").hidden) {
    state.unread += 1;
    notify(t("chatFrom", { name, text: text.length > 80 ? `${text.slice(0, 80)} …` : text }));
    renderCallButtons();
  }
}

function appendChat(name, text, own) {
  const item = document.createElement("li");
  if (own) item.className = "own";
  const who = document.createElement("strong");
  who.textContent = name;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString(document.documentElement.lang, { hour: "2-digit", minute: "2-digit" });
  const body = document.createElement("p");
  body.textContent = text;
  item.append(who, " ", time, body);
  const log = $("chat-log");
  log.append(item);
  while (log.children.length > 200) log.firstElementChild.remove();
  $("chat-scroll").scrollTop = $("chat-scroll").scrollHeight;
}

// ------------------------------------------------------------------------------------------
// Leaving
// ------------------------------------------------------------------------------------------

/** Closes the media connection and removes the others' tiles; the socket stays. */
function closeMedia() {
  state.pc?.close();
  state.pc = null;
  for (const participant of state.participants.values()) {
    participant.tile.remove();
    participant.screenTile?.remove();
  }
  state.participants.clear();
  state.pendingStreams.clear();
  // A new node knows nothing of this client's sizes and settings yet.
  state.lastViewports = null;
}

function teardown() {
  trace("teardown");
  state.joined = false;
  state.pc?.close();
  state.pc = null;
  const ws = state.ws;
  state.ws = null;
  ws?.close();
  stopScreen();
  state.participants.clear();
  state.pendingStreams.clear();
  state.lastViewports = null;
  state.speaker = null;
  state.pinned = null;
  $("grid").replaceChildren();
  // The chat and the names are kept nowhere after the meeting, not even in this page.
  $("chat-log").replaceChildren();
  $("people-list").replaceChildren();
  $("knocking-list").replaceChildren();
  $("chat").hidden = true;
  state.unread = 0;
}

function leave() {
  state.leaving = true;
  send({ type: "leave" });
  teardown();
  stopDevices();
  ended("left");
}

function ended(reason) {
  trace(`ended ${reason}`);
  const wasLeaving = state.leaving;
  state.leaving = true;
  teardown();
  // The name is remembered for a reload during the meeting, not for whoever uses this browser
  // next (the form keeps it for "Join again").
  sessionStorage.removeItem("treffpunkt.name");
  stopDevices();
  show("ended");
  $("ended-heading").textContent = t(reason === "left" ? "endedHeading" : `closed.${reason}`);
  $("ended-detail").textContent = "";
  if (!wasLeaving && reason !== "left") notify(t(`closed.${reason}`), { sticky: true, kind: "error" });
  $("rejoin").focus();
}

async function rejoin() {
  trace("rejoin");
  notify("");
  resetJoinButton();
  show("lobby");
  await preparePreview();
  join();
}

// ------------------------------------------------------------------------------------------

translatePage();
setupLanguageSwitch();
if (state.tenant && state.room) setupLobby();
else setupLanding(state.tenant);
