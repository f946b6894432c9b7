// Moderation in the call: the waiting screen of the lobby, the participant list with everyone's
// microphone, camera and hand, raised hands, and for moderators who knocks, admit and deny, and
// the actions on one person or the whole room. The server checks every action; the buttons are
// only shown to moderators because nobody else could use them.

import { errorText, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

/** What the call screen shares with this module. */
let app = null;
/** Who moderates here, whether the room is locked, the raised hands, who knocks. */
const room = { moderator: false, locked: false, hands: [], knocking: [] };

/**
 * Wires the buttons. `hooks` carries the app's state and its actions: `state`, `send`,
 * `notify`, `muteMic()`, `stopCamera()`, `stopScreen()`, `focusMic()`, `show(screen)`.
 */
export function setupModeration(hooks) {
  app = hooks;
  $("call-hand").addEventListener("click", () => {
    const raised = !room.hands.includes(app.state.me);
    app.send({ type: "hand", raised });
  });
  $("call-people").addEventListener("click", () => togglePeople());
  $("call-invite").addEventListener("click", () => copyInvitation());
  $("waiting-leave").addEventListener("click", () => app.leave());
  $("mute-all").addEventListener("click", () => moderate("mute-all"));
  $("lock-room").addEventListener("click", () => moderate(room.locked ? "unlock" : "lock"));
  $("end-meeting").addEventListener("click", () => {
    if (confirm(t("endConfirm"))) moderate("end");
  });
  $("moderator-toggle").addEventListener("click", () => {
    $("password-field").hidden = false;
    $("moderator-toggle").setAttribute("aria-expanded", "true");
    $("room-password").focus();
  });
}

function moderate(action, participantId) {
  app.send(participantId ? { type: "moderate", action, participantId } : { type: "moderate", action });
}

/** The welcome: your role, the lock, the hands. */
export function welcomed(message) {
  room.moderator = Boolean(message.moderator);
  room.locked = Boolean(message.locked);
  room.hands = message.hands ?? [];
  room.knocking = [];
  render();
}

/** Handles a moderation message; returns whether it was one. */
export function handleModeration(message) {
  switch (message.type) {
    case "waiting": {
      app.show("waiting");
      const text = t(message.moderatorPresent ? "waitingForModerator" : "waitingNoModerator");
      $("waiting-text").textContent = text;
      // The screen was hidden a moment ago, so its own words may go unread: said once more.
      app.announce(text);
      // The keyboard's place is on the screen that is shown, not on the hidden join button.
      $("waiting-leave").focus();
      return true;
    }
    case "knocking":
      if (message.waiting.length > room.knocking.length) {
        const newest = message.waiting[message.waiting.length - 1];
        app.notify(t("knocks", { name: newest.name }), { sticky: true });
      }
      room.knocking = message.waiting;
      render();
      return true;
    case "hands": {
      // Someone who raises a hand is announced, so that nobody has to watch the badges.
      const raised = message.order.filter((id) => !room.hands.includes(id) && id !== app.state.me);
      room.hands = message.order;
      for (const id of raised) {
        const name = app.state.participants.get(id)?.name;
        if (name) app.notify(t("handRaised", { name }));
      }
      render();
      return true;
    }
    case "role":
      if (message.participantId === app.state.me) {
        room.moderator = message.moderator;
        if (room.moderator) app.notify(t("youModerate"));
      } else {
        const participant = app.state.participants.get(message.participantId);
        if (participant) participant.moderator = message.moderator;
      }
      render();
      return true;
    case "room-state":
      room.locked = message.locked;
      app.notify(t(room.locked ? "roomLocked" : "roomUnlocked"));
      render();
      return true;
    case "request":
      return request(message.kind);
    case "invitation":
      invitationArrived(message);
      return true;
    case "error":
      // A refused action in the call (an invitation, a moderator's action after the role
      // passed on, a chat message) is explained; errors before joining, and while the
      // session is taken up again after a lost connection, are the app's (it retries).
      if (!app.state.joined || app.state.resumePending || message.code === "resume-refused") {
        return false;
      }
      app.notify(errorText(message.code), { kind: "error" });
      return true;
    default:
      return false;
  }
}

function request(kind) {
  if (kind === "muted") {
    app.muteMic();
    app.notify(t("mutedByModerator"), { sticky: true, kind: "warning" });
  } else if (kind === "camera-stopped") {
    app.stopCamera();
    app.notify(t("cameraStoppedByModerator"), { sticky: true, kind: "warning" });
  } else if (kind === "screen-stopped") {
    app.stopScreen();
    app.notify(t("screenStoppedByModerator"), { sticky: true, kind: "warning" });
  } else if (kind === "unmute") {
    app.notify(t("unmuteRequested"), { sticky: true });
    app.focusMic();
  }
  return true;
}

function togglePeople() {
  const open = $("people").hidden;
  $("people").hidden = !open;
  $("call-people").setAttribute("aria-expanded", String(open));
  if (open) render();
}

/**
 * Asks the gateway what lets someone else in: the room's address, and in an invite-only room a
 * fresh invitation, which only moderators get. The own invitation is never passed on (it may be
 * a moderator's).
 */
function copyInvitation() {
  app.send({ type: "invitation" });
}

async function invitationArrived({ invite, expiresAtUnixMs }) {
  const address = `${location.origin}/${app.state.tenant}/${app.state.room}`;
  const url = invite ? `${address}#invite=${invite}` : address;
  const text = expiresAtUnixMs
    ? t("invitationCopiedUntil", { date: new Date(expiresAtUnixMs).toLocaleString(document.documentElement.lang) })
    : t("invitationCopied");
  try {
    await navigator.clipboard.writeText(url);
    app.notify(text);
  } catch {
    // Without clipboard access the address is shown to copy by hand.
    app.notify(t("invitationToCopy", { url }), { sticky: true });
  }
}

/** Draws the hand button, the participant list and, for moderators, who knocks. */
export function render() {
  if (!app?.state.joined) return;
  const raised = room.hands.includes(app.state.me);
  $("call-hand").setAttribute("aria-pressed", String(raised));
  $("call-hand").title = t("withShortcut", { action: t(raised ? "lowerHand" : "raiseHand"), key: "H" });
  for (const [id, participant] of app.state.participants) {
    const hand = participant.tile.querySelector(".hand");
    const position = room.hands.indexOf(id);
    hand.hidden = position < 0;
    hand.textContent = t("handBadge", { n: position + 1 });
  }
  $("moderator-tools").hidden = !room.moderator;
  const waiting = room.moderator ? room.knocking.length : 0;
  $("call-people").querySelector(".label").textContent = waiting
    ? t("waitingBadge", { n: waiting })
    : t("peopleShort");
  $("call-people").classList.toggle("attention", waiting > 0);
  // Its words say what a click does ("Unlock the room"), so it has no pressed state.
  $("lock-room").textContent = t(room.locked ? "unlockRoom" : "lockRoom");
  renderKnocking();
  if (!$("people").hidden) renderPeople();
}

/**
 * Draws `list` anew with `fill`, keeping the keyboard's place: a button that had the focus gets
 * it back in its person's new row (or, with the person gone, the first button of the row now in
 * that place), so that a moderator on "Remove" is not thrown back to the top of the page
 * whenever someone mutes or raises a hand.
 */
function keepingFocus(list, fill) {
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const row = focused?.closest("li");
  const rows = [...list.children];
  const place = rows.indexOf(row);
  const index = row ? [...row.querySelectorAll("button")].indexOf(focused) : -1;
  fill();
  if (!row) return;
  const again = [...list.children].find((item) => item.dataset.key === row.dataset.key);
  const buttons = again ? [...again.querySelectorAll("button")] : [];
  const target = buttons[Math.min(index, buttons.length - 1)] ?? list.children[place]?.querySelector("button");
  target?.focus();
}

function renderKnocking() {
  const list = $("knocking-list");
  keepingFocus(list, () => fillKnocking(list));
}

function fillKnocking(list) {
  list.replaceChildren();
  $("knocking").hidden = !room.moderator || room.knocking.length === 0;
  for (const knock of room.knocking) {
    const item = document.createElement("li");
    item.dataset.key = knock.id;
    const name = document.createElement("span");
    name.textContent = knock.name;
    item.append(
      name,
      button(t("admit"), () => moderate("admit", knock.id), "primary"),
      button(t("deny"), () => moderate("deny", knock.id)),
    );
    list.append(item);
  }
}

function renderPeople() {
  const list = $("people-list");
  keepingFocus(list, () => fillPeople(list));
}

function fillPeople(list) {
  list.replaceChildren();
  const me = { id: app.state.me, name: `${$("display-name").value.trim()} (${t("you")})`, moderator: room.moderator };
  me.audioMuted = app.state.audioMuted;
  me.videoMuted = app.state.videoMuted;
  for (const person of [me, ...app.state.participants.values()]) {
    const item = document.createElement("li");
    item.dataset.key = person.id;
    const states = [
      person.moderator ? t("moderatorBadge") : null,
      t(person.audioMuted ? "micOffState" : "micOnState"),
      t(person.videoMuted ? "cameraOffState" : "cameraOnState"),
      room.hands.includes(person.id) ? t("handBadge", { n: room.hands.indexOf(person.id) + 1 }) : null,
    ].filter(Boolean);
    const name = document.createElement("strong");
    name.textContent = person.name;
    const detail = document.createElement("span");
    detail.className = "hint";
    detail.textContent = states.join(" · ");
    item.append(name, " ", detail);
    if (room.moderator && person.id !== app.state.me) item.append(personActions(person));
    list.append(item);
  }
}

function personActions(person) {
  const actions = document.createElement("div");
  actions.className = "person-actions";
  actions.setAttribute("role", "group");
  actions.setAttribute("aria-label", t("actionsFor", { name: person.name }));
  if (!person.audioMuted) actions.append(button(t("muteOne"), () => moderate("mute", person.id)));
  else actions.append(button(t("askUnmute"), () => moderate("ask-unmute", person.id)));
  if (!person.videoMuted) actions.append(button(t("stopCamera"), () => moderate("stop-camera", person.id)));
  if (person.screenSharing) actions.append(button(t("stopTheirScreen"), () => moderate("stop-screen", person.id)));
  if (room.hands.includes(person.id)) actions.append(button(t("lowerTheirHand"), () => moderate("lower-hand", person.id)));
  if (!person.moderator) actions.append(button(t("makeModerator"), () => moderate("make-moderator", person.id)));
  actions.append(button(t("remove"), () => moderate("remove", person.id), "danger"));
  return actions;
}

function button(text, onClick, kind = "") {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  if (kind) element.className = kind;
  element.addEventListener("click", onClick);
  return element;
}
