// The client's texts in German and English. The language follows the browser's; `?lang=en` or
// `?lang=de` overrides it. German uses the formal "Sie", as a city service does.

export const STRINGS = {
  de: {
    appName: "Treffpunkt",
    skipToContent: "Zum Inhalt springen",
    landingHeading: "Videotreffen für alle",
    landingIntro: "Ohne Anmeldung, ohne Installation. Keine Aufzeichnung, keine Werbung, keine Daten an Dritte.",
    roomNameLabel: "Name des Raums",
    roomNameHint: "Alle, die denselben Namen eingeben, treffen sich im selben Raum.",
    roomNameInvalid: "Bitte nur Buchstaben, Ziffern und Bindestriche verwenden.",
    startMeeting: "Treffen starten",
    lobbyHeading: "Bereit zum Beitreten?",
    yourName: "Ihr Name",
    join: "Beitreten",
    joining: "Verbinde …",
    callHeading: "Im Gespräch",
    participants: "Teilnehmende",
    you: "Sie",
    micOn: "Mikrofon einschalten",
    micOff: "Mikrofon ausschalten",
    camOn: "Kamera einschalten",
    camOff: "Kamera ausschalten",
    micIsOff: "Mikrofon ist aus",
    cameraIsOff: "Kamera ist aus",
    mutedBadge: "stumm",
    leave: "Verlassen",
    endedHeading: "Sie haben das Treffen verlassen.",
    rejoin: "Wieder beitreten",
    joined: "{name} ist beigetreten.",
    left: "{name} hat das Treffen verlassen.",
    lostParticipant: "Die Verbindung zu {name} ist abgebrochen.",
    alone: "Noch niemand da. Teilen Sie den Link dieser Seite, um andere einzuladen.",
    connecting: "Verbindung wird aufgebaut …",
    reconnecting: "Die Verbindung ist gestört. Einen Moment bitte …",
    moving: "Das Treffen zieht auf einen anderen Server um. Einen Moment bitte …",
    connected: "Verbunden.",
    devicesDenied: "Kamera und Mikrofon sind nicht freigegeben. Sie können trotzdem beitreten und zuhören. Um gesehen und gehört zu werden, erlauben Sie den Zugriff in Ihrem Browser.",
    devicesMissing: "Es wurde keine Kamera und kein Mikrofon gefunden. Sie können trotzdem beitreten und zuhören.",
    "error.name-empty": "Bitte geben Sie Ihren Namen ein.",
    "error.name-too-long": "Der Name ist zu lang (höchstens 64 Zeichen).",
    "error.name-invalid": "Der Name enthält Zeichen, die nicht erlaubt sind.",
    "error.room-full": "Dieser Raum ist voll. Bitte versuchen Sie es später noch einmal.",
    "error.room-not-found": "Diesen Raum gibt es nicht.",
    "error.room-limit": "Hier können gerade keine neuen Räume eröffnet werden.",
    "error.tenant-suspended": "Dieser Bereich ist zurzeit gesperrt.",
    "error.platform-full": "Die Plattform ist gerade voll. Bitte versuchen Sie es später noch einmal.",
    "error.unavailable": "Der Dienst ist gerade nicht erreichbar. Bitte versuchen Sie es noch einmal.",
    "error.too-many-connections": "Von Ihrem Anschluss bestehen zu viele Verbindungen. Bitte schließen Sie andere Fenster mit Treffpunkt und versuchen Sie es noch einmal.",
    "error.server-busy": "Der Dienst ist gerade ausgelastet. Bitte versuchen Sie es in einigen Minuten noch einmal.",
    "error.too-many-joins": "Von Ihrem Anschluss kamen zu viele Beitrittsversuche. Bitte warten Sie eine Minute und versuchen Sie es dann noch einmal.",
    "error.join-timeout": "Die Verbindung wurde getrennt, weil der Beitritt zu lange gedauert hat. Bitte versuchen Sie es noch einmal.",
    "error.connection-lost": "Die Verbindung ist abgebrochen.",
    "error.generic": "Etwas ist schiefgegangen. Bitte versuchen Sie es noch einmal.",
    "error.password-required": "Dieser Raum ist mit einem Passwort geschützt. Bitte geben Sie es ein.",
    "error.password-wrong": "Das Passwort stimmt nicht. Bitte versuchen Sie es noch einmal.",
    "error.too-many-attempts": "Zu viele falsche Passwörter. Bitte warten Sie zehn Minuten und versuchen Sie es dann noch einmal.",
    "error.invite-required": "In diesen Raum kommen Sie nur mit einer Einladung. Bitte öffnen Sie den Einladungslink, den Sie bekommen haben.",
    "error.invite-invalid": "Diese Einladung gilt nicht (mehr) für diesen Raum. Bitte fragen Sie nach einer neuen.",
    "error.invite-expired": "Diese Einladung ist abgelaufen. Bitte fragen Sie nach einer neuen.",
    roomPassword: "Passwort des Raums",
    "error.resume-refused": "Diese Sitzung ist beendet. Bitte treten Sie neu bei.",
    "closed.connection-lost": "Die Verbindung zum Treffen ist abgebrochen.",
    "closed.refused": "Der Beitritt wurde abgelehnt.",
    "closed.room-closed": "Das Treffen wurde beendet.",
    "closed.protocol-error": "Die Verbindung wurde wegen eines Fehlers beendet.",
    "closed.left": "Sie haben das Treffen verlassen.",
    "closed.replaced": "Sie sind dem Treffen an anderer Stelle erneut beigetreten, zum Beispiel in einem anderen Fenster. Diese Verbindung wurde beendet.",
    screenOf: "Bildschirm von {name}",
    showLarge: "Groß zeigen",
    showNormal: "Normal zeigen",
    videoPausedBandwidth: "Video pausiert: Ihre Verbindung ist zu langsam. Der Ton läuft weiter.",
    videoPausedLastN: "Video pausiert: Es werden nur die letzten Sprechenden gezeigt.",
    videoPausedNotice: "Ihre Verbindung ist langsam. Einige Videos sind pausiert, der Ton läuft weiter.",
    sharesScreen: "{name} teilt den Bildschirm.",
    shareScreen: "Bildschirm teilen",
    stopSharing: "Teilen beenden",
    audioOnly: "Nur Ton",
    videoAgain: "Videos wieder zeigen",
    chat: "Chat",
    chatNote: "Nachrichten gehen an alle im Raum und werden nirgends gespeichert.",
    chatLabel: "Nachricht",
    chatFrom: "{name}: {text}",
    send: "Senden",
  },
  en: {
    appName: "Treffpunkt",
    skipToContent: "Skip to content",
    landingHeading: "Video meetings for everyone",
    landingIntro: "No account, nothing to install. No recording, no ads, no data passed to anyone.",
    roomNameLabel: "Room name",
    roomNameHint: "Everyone who enters the same name meets in the same room.",
    roomNameInvalid: "Please use only letters, digits and hyphens.",
    startMeeting: "Start meeting",
    lobbyHeading: "Ready to join?",
    yourName: "Your name",
    join: "Join",
    joining: "Connecting …",
    callHeading: "In the meeting",
    participants: "Participants",
    you: "You",
    micOn: "Unmute",
    micOff: "Mute",
    camOn: "Start camera",
    camOff: "Stop camera",
    micIsOff: "Microphone is off",
    cameraIsOff: "Camera is off",
    mutedBadge: "muted",
    leave: "Leave",
    endedHeading: "You have left the meeting.",
    rejoin: "Join again",
    joined: "{name} joined.",
    left: "{name} left the meeting.",
    lostParticipant: "The connection to {name} was lost.",
    alone: "Nobody else is here yet. Share this page's link to invite others.",
    connecting: "Connecting …",
    reconnecting: "The connection is unstable. One moment please …",
    moving: "The meeting is moving to another server. One moment please …",
    connected: "Connected.",
    devicesDenied: "Camera and microphone are not allowed. You can still join and listen. To be seen and heard, allow access in your browser.",
    devicesMissing: "No camera or microphone was found. You can still join and listen.",
    "error.name-empty": "Please enter your name.",
    "error.name-too-long": "The name is too long (at most 64 characters).",
    "error.name-invalid": "The name contains characters that are not allowed.",
    "error.room-full": "This room is full. Please try again later.",
    "error.room-not-found": "This room does not exist.",
    "error.room-limit": "No new rooms can be opened here right now.",
    "error.tenant-suspended": "This space is suspended at the moment.",
    "error.platform-full": "The platform is full right now. Please try again later.",
    "error.unavailable": "The service is unavailable right now. Please try again.",
    "error.too-many-connections": "There are too many connections from your network. Please close other Treffpunkt windows and try again.",
    "error.server-busy": "The service is busy right now. Please try again in a few minutes.",
    "error.too-many-joins": "There were too many attempts to join from your network. Please wait a minute, then try again.",
    "error.join-timeout": "The connection was closed because joining took too long. Please try again.",
    "error.connection-lost": "The connection was lost.",
    "error.generic": "Something went wrong. Please try again.",
    "error.password-required": "This room is protected by a password. Please enter it.",
    "error.password-wrong": "The password is not correct. Please try again.",
    "error.too-many-attempts": "Too many wrong passwords. Please wait ten minutes and then try again.",
    "error.invite-required": "This room is open only to invited people. Please open the invitation link you received.",
    "error.invite-invalid": "This invitation is not (or no longer) valid for this room. Please ask for a new one.",
    "error.invite-expired": "This invitation has expired. Please ask for a new one.",
    roomPassword: "Room password",
    "error.resume-refused": "This session has ended. Please join again.",
    "closed.connection-lost": "The connection to the meeting was lost.",
    "closed.refused": "Joining was refused.",
    "closed.room-closed": "The meeting has ended.",
    "closed.protocol-error": "The connection was ended because of an error.",
    "closed.left": "You have left the meeting.",
    "closed.replaced": "You joined the meeting again elsewhere, for example in another window. This connection was ended.",
    screenOf: "{name}'s screen",
    showLarge: "Show large",
    showNormal: "Show normal",
    videoPausedBandwidth: "Video paused: your connection is too slow. The sound goes on.",
    videoPausedLastN: "Video paused: only the latest speakers are shown.",
    videoPausedNotice: "Your connection is slow. Some videos are paused; the sound goes on.",
    sharesScreen: "{name} is sharing their screen.",
    shareScreen: "Share screen",
    stopSharing: "Stop sharing",
    audioOnly: "Audio only",
    videoAgain: "Show videos again",
    chat: "Chat",
    chatNote: "Messages go to everyone in the room and are saved nowhere.",
    chatLabel: "Message",
    chatFrom: "{name}: {text}",
    send: "Send",
  },
};

function chooseLanguage() {
  const forced = new URLSearchParams(location.search).get("lang");
  if (forced && forced in STRINGS) return forced;
  const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of preferred) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in STRINGS) return base;
  }
  return "en";
}

export const lang = chooseLanguage();

/** The text for `key`, with `{name}`-style placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}

/** The text for an error code from the server. */
export function errorText(code) {
  const key = `error.${code}`;
  return key in STRINGS[lang] ? t(key) : t("error.generic");
}

/** Translates every element with a `data-i18n` attribute and sets the document language. */
export function translatePage() {
  document.documentElement.lang = lang;
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}
