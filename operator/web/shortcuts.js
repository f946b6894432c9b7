// Keyboard shortcuts in the call: M for the microphone, V for the camera, H for the hand, C for
// the chat, and ? for the dialog that lists them. They can be switched off there (a single
// letter may clash with a screen reader's or a speech input's own keys); that choice is kept in
// this browser.

const $ = (id) => document.getElementById(id);

const STORAGE_KEY = "treffpunkt.shortcuts";

/** Whether the shortcuts are on. */
function enabled() {
  try {
    return localStorage.getItem(STORAGE_KEY) !== "off";
  } catch {
    return true;
  }
}

/** Whether a key press belongs to a field or a control that uses letters itself. */
function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

/**
 * Listens for the shortcuts while `active()` says the call is on. `actions` maps a key
 * ("m", "v", "h", "c") to what it does.
 */
export function setupShortcuts({ active, actions }) {
  const dialog = $("help-dialog");
  const toggle = $("shortcuts-enabled");
  toggle.checked = enabled();
  toggle.addEventListener("change", () => {
    try {
      localStorage.setItem(STORAGE_KEY, toggle.checked ? "on" : "off");
    } catch {
      // Without storage the choice holds for this page.
    }
  });
  $("call-help").addEventListener("click", () => openHelp());
  $("help-close").addEventListener("click", () => dialog.close());
  document.addEventListener("keydown", (event) => {
    if (!active() || !toggle.checked || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target) || document.querySelector("dialog[open]")) return;
    if (event.key === "?") {
      event.preventDefault();
      openHelp();
      return;
    }
    const action = actions[event.key.toLowerCase()];
    if (action) {
      event.preventDefault();
      action();
    }
  });
}

function openHelp() {
  $("help-dialog").showModal();
  $("help-close").focus();
}
