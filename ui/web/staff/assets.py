"""The staff console's page assets: its style sheet and one script (keyboard shortcuts, notifications).

The script only touches the page: Ctrl+Enter (Cmd+Enter) in the reply box presses "Send reply";
`/shortcut` followed by Tab, or a pick in the canned-reply list, inserts a canned reply from the escaped
data the server put in `#canned-data` (in the page, with no server round trip whose late answer could
overwrite what the staff member typed meanwhile); a new ticket in the queue plays a short tone and,
once the staff member has allowed it, shows a desktop notification; the tab title carries the unread
count. It never sends anything itself:
every action still goes through a button and the server's checks.
"""

from __future__ import annotations

CSS = """
.msg{border-left:3px solid #ccc;padding:4px 8px;margin:6px 0}
.msg-user{border-color:#f97316}.msg-staff{border-color:#2563eb}.msg-system{border-color:#9ca3af;color:#555}
#queue td,#earlier td{cursor:pointer}
#customer-facts th{text-align:left;padding-right:.8em;font-weight:600}
.suggestion{border:1px solid #e5e7eb;border-radius:6px;padding:8px 10px;margin:4px 0}
"""

HEAD = """<script>
(() => {
  let audio = null;
  function unlockAudio() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") audio.resume();
    } catch (err) { audio = null; }
  }
  // browsers only let a page play sound after the person has interacted with it
  document.addEventListener("pointerdown", unlockAudio, {capture: true});
  function tone() {
    unlockAudio();
    if (!audio) return;
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.type = "sine";
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.35);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.35);
  }
  let known = null;  // ids of the open tickets at the last update (null: the page just loaded)
  window.firstlineInbox = (signal) => {
    if (!signal) return;
    const base = document.title.replace(/^\\(\\d+\\) /, "");
    document.title = signal.unread ? "(" + signal.unread + ") " + base : base;
    const open = signal.open || [];
    if (known !== null) {
      const fresh = open.filter((t) => !known.has(t.id));
      if (fresh.length) {
        tone();
        if ("Notification" in window && Notification.permission === "granted") {
          for (const t of fresh.slice(0, 3)) new Notification("New ticket " + t.id, {body: t.reason, tag: t.id});
        }
      }
    }
    known = new Set(open.map((t) => t.id));
  };
  window.firstlineEnableNotifications = async () => {
    unlockAudio();
    if (!("Notification" in window)) {
      return "This browser cannot show notifications: new tickets play a tone and show in the tab title.";
    }
    const permission = await Notification.requestPermission();
    return permission === "granted"
      ? "Notifications are on: a new ticket shows a desktop notification and plays a tone."
      : "Notifications are blocked in this browser: new tickets play a tone and show in the tab title.";
  };
  function cannedText(shortcut) {
    let replies = {};
    try { replies = JSON.parse(document.getElementById("canned-data")?.dataset.canned || "{}"); } catch (err) {}
    return Object.hasOwn(replies, shortcut) && typeof replies[shortcut] === "string" ? replies[shortcut] : null;
  }
  document.addEventListener("keydown", (e) => {
    const box = e.target;
    if (!(box instanceof HTMLTextAreaElement) || !box.closest("#reply")) return;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      const send = document.getElementById("send-reply");
      if (send && !send.disabled) send.click();
      return;
    }
    if (e.key !== "Tab" || e.shiftKey || e.ctrlKey || e.altKey || e.metaKey) return;
    const pos = box.selectionStart;
    if (pos !== box.selectionEnd) return;
    const match = box.value.slice(0, pos).match(/(^|\\s)\\/([a-z0-9][a-z0-9_-]{0,31})$/);
    if (!match) return;
    const text = cannedText(match[2]);
    if (text === null) return;  // not a known shortcut: Tab moves on as usual
    e.preventDefault();
    const start = pos - match[2].length - 1;
    box.value = box.value.slice(0, start) + text + box.value.slice(pos);
    box.setSelectionRange(start + text.length, start + text.length);
    box.dispatchEvent(new Event("input", {bubbles: true}));
  }, true);
  // a pick in "Insert a canned reply" (its select event, which Escape and blur do not fire): appended
  // to the reply box as it is now; the picker empties again
  window.firstlineInsertCanned = (shortcut) => {
    const text = typeof shortcut === "string" ? cannedText(shortcut) : null;
    const box = document.querySelector("#reply textarea");
    if (text !== null && box) {
      box.value = box.value.trim() ? box.value.replace(/\\s+$/, "") + "\\n" + text : text;
      box.dispatchEvent(new Event("input", {bubbles: true}));
      box.focus();  // the staff member writes on after the inserted reply
      box.setSelectionRange(box.value.length, box.value.length);
    }
    return null;
  };
})();
</script>"""
