"""The README's screenshots of the three pages, taken in Chromium from a `make run`-like server.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--backend llama|scripted]

Starts `firstline serve` on a free port with a fresh data directory (the bundled model and the demo help
centre, as `make run` does), creates a staff and an admin login, has three customers chat (one answer,
two hand-overs), then photographs /chat/, /staff/ and /admin/ and writes small palette PNGs.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PASSWORD = "screenshot horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server stopped while starting")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not start")


def shrink(path: Path) -> None:
    """Palette PNG (256 colours): a fraction of the size, no visible loss for UI screenshots."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def login(page: object, base: str, name: str, target: str) -> None:
    page.goto(f"{base}/login?next={target}")  # type: ignore[attr-defined]
    page.locator("#username").fill(name)  # type: ignore[attr-defined]
    page.locator("#password").fill(PASSWORD)  # type: ignore[attr-defined]
    page.locator("#login").click()  # type: ignore[attr-defined]


def chat(page: object, text: str, wait_for: str, times: int = 1, timeout: float = 120_000) -> None:
    """Send TEXT and wait until the chat shows WAIT_FOR TIMES times (an earlier answer may hold it already)."""
    box = page.locator("#message textarea")  # type: ignore[attr-defined]
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(  # type: ignore[attr-defined]
        "([needle, n]) => (document.querySelector('#chat')?.innerText || '').split(needle).length - 1 >= n",
        arg=[wait_for, times],
        timeout=timeout,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--backend", choices=["llama", "scripted"], default="llama")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="firstline-shots-"))
    env = {**os.environ, "FIRSTLINE_DATA_DIR": str(data), "FIRSTLINE_MODEL_BACKEND": args.backend,
           "FIRSTLINE_TEMPERATURE": "0", "FIRSTLINE_MAX_TOKENS": "80", "GRADIO_ANALYTICS_ENABLED": "False"}  # fmt: skip
    for name, role in (("sam", "staff"), ("ada", "admin")):
        subprocess.run([sys.executable, "-m", "ui.cli", "users", "add", name, "--role", role, "--password-stdin"],
                       input=PASSWORD.encode(), env=env, cwd=ROOT, check=True)  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--port", str(port)], env=env, cwd=ROOT)
    try:
        wait_up(base, server)
        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            # two customers who need a person (the staff queue) ...
            for locale, question in (
                ("de-DE", "Ich möchte mit einem Mitarbeiter sprechen, meine Rechnung ist doppelt abgebucht worden."),
                ("en-GB", "I want a refund for last month, the internet was down for a week."),
            ):
                ctx = browser.new_context(locale=locale)
                page = ctx.new_page()
                page.goto(base + "/chat/")
                chat(page, question, "T-")
                ctx.close()
            # ... and one the bot answers: the customer page
            ctx = browser.new_context(locale="en-GB", viewport={"width": 960, "height": 860})
            page = ctx.new_page()
            page.goto(base + "/chat/")
            page.wait_for_timeout(1500)
            chat(page, "When is my bill debited?", "SEPA")
            chat(page, "How can I set up my new router and Wi-Fi at home?", "Sources", times=2)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(args.out / "chat.png"))
            ctx.close()
            # the staff inbox
            ctx = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 860})
            page = ctx.new_page()
            login(page, base, "sam", "/staff/")
            expect(page.locator("body")).to_contain_text("T-", timeout=60_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "staff.png"))
            ctx.close()
            # the admin dashboard
            ctx = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            login(page, base, "ada", "/admin/")
            page.wait_for_timeout(6000)
            page.screenshot(path=str(args.out / "admin.png"))
            ctx.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name in ("chat", "staff", "admin"):
        shrink(args.out / f"{name}.png")
        print(f"{args.out / f'{name}.png'}: {(args.out / f'{name}.png').stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
