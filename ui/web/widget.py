"""The embeddable chat widget: one `<script>` tag on a company's own web site gives a floating chat button.

    <script src="https://support.example.com/widget.js" data-lang="de" async></script>

/widget.js adds a round button to the page's corner; clicking it opens the chat (/chat/?embed=1) in a
panel (an iframe), clicking again closes it. Inside the frame runs the same /chat/ app as on its own page:
the same rate limits, sanitising, language rules and conversation token (the browser keeps it for the
chat's origin). Which sites may frame the chat is the server's decision, not the script's:
`FIRSTLINE_WIDGET_ORIGINS` becomes the chat's `Content-Security-Policy: frame-ancestors`; a site not listed
gets an empty frame. /login, /staff and /admin stay unframeable whatever is configured (ui/web/server.py).

Options (data attributes of the script tag): `data-lang` (de/en; default: the visitor's browser),
`data-label` (the button's accessible name), `data-color` (#rgb or #rrggbb).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

WIDGET_PATH = "/widget.js"

# Plain ES5, no dependencies, nothing from the host page is written as HTML (only attributes and styles,
# validated), so the host page's data cannot inject into it.
WIDGET_JS = r"""(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__firstlineWidget) { return; }
  window.__firstlineWidget = true;
  var origin = new URL(script.src, window.location.href).origin;
  var lang = (script.getAttribute("data-lang") || navigator.language || "en").slice(0, 2).toLowerCase();
  if (lang !== "de") { lang = "en"; }
  var texts = {
    en: {open: "Chat with our support", close: "Close the chat"},
    de: {open: "Chat mit unserem Support", close: "Chat schließen"}
  }[lang];
  var label = script.getAttribute("data-label") || texts.open;
  var color = script.getAttribute("data-color") || "";
  if (!/^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$/.test(color)) { color = "#2563eb"; }
  var chatIcon = '<svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">' +
    '<path d="M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z"/></svg>';
  var closeIcon = '<svg width="24" height="24" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
    'stroke-width="2.5" stroke-linecap="round" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>';

  var button = document.createElement("button");
  button.id = "firstline-launcher";
  button.type = "button";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.setAttribute("aria-expanded", "false");
  button.innerHTML = chatIcon;
  button.style.cssText = "position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;" +
    "border:0;padding:0;cursor:pointer;z-index:2147483000;display:flex;align-items:center;" +
    "justify-content:center;color:#fff;box-shadow:0 4px 14px rgba(0,0,0,.25);background:" + color;

  var panel = document.createElement("div");
  panel.id = "firstline-panel";
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", label);
  panel.style.cssText = "position:fixed;right:20px;bottom:88px;width:400px;max-width:calc(100vw - 40px);" +
    "height:640px;max-height:calc(100vh - 110px);z-index:2147483000;display:none;border-radius:12px;" +
    "overflow:hidden;background:#fff;box-shadow:0 8px 30px rgba(0,0,0,.3)";
  var frame = null;

  button.addEventListener("click", function () {
    var opening = panel.style.display === "none";
    if (opening && frame === null) {
      frame = document.createElement("iframe");
      frame.id = "firstline-frame";
      frame.title = label;
      frame.src = origin + "/chat/?embed=1&lang=" + lang;
      frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms allow-popups " +
        "allow-popups-to-escape-sandbox");
      frame.setAttribute("allow", "clipboard-write");
      frame.style.cssText = "border:0;width:100%;height:100%;display:block";
      panel.appendChild(frame);
    }
    panel.style.display = opening ? "block" : "none";
    button.innerHTML = opening ? closeIcon : chatIcon;
    button.setAttribute("aria-expanded", opening ? "true" : "false");
    button.setAttribute("aria-label", opening ? texts.close : label);
  });

  function attach() {
    document.body.appendChild(panel);
    document.body.appendChild(button);
  }
  if (document.body) { attach(); } else { document.addEventListener("DOMContentLoaded", attach); }
})();
"""


def frame_ancestors(origins: list[str]) -> str:
    """The chat's CSP: only the chat itself and the configured sites may frame it."""
    return "frame-ancestors " + " ".join(["'self'", *origins])


def mount_widget(app: FastAPI) -> None:
    """Serve /widget.js (public, cacheable for five minutes, loadable from any site by a script tag)."""

    @app.get(WIDGET_PATH, include_in_schema=False)
    def widget() -> Response:
        return Response(
            WIDGET_JS,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300", "Cross-Origin-Resource-Policy": "cross-origin"},
        )
