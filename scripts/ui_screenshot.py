"""Remake docs/ui-sweep.png: the "Sweep and choose" tab of `ufo-video ui` over the checkpoints
of one `ufo-video demo` run, in headless Chromium (Debian's chromium + chromedriver, driven by
Selenium, as tests/test_ui_browser.py does).

    ufo-video demo --out demo-out
    python scripts/ui_screenshot.py --demo demo-out --png docs/ui-sweep.png

It starts `ufo-video ui` (its outputs in a new folder next to the PNG unless --ui-out), sets the
Generate tab's steps, types the demo's training folder (all its checkpoint-N files), the weights,
the demo's first two prompts and two seeds into the Sweep tab, waits for the result and saves the
page from the tabs down to the settings table, ~1400 px wide, as a palette PNG (small, legible).
Why a script: the README's caption names exactly these settings, so anyone can make the picture again.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

WEIGHTS = "0,0.1,0.5,1"
SEEDS = "1,2"
STEPS = 12  # the demo's own (its plan.inference_steps)
WIDTH = 1400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"ufo-video ui exited with code {proc.returncode} before serving {url}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"ufo-video ui did not serve {url} within {timeout:.0f} s")


def browser(height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs chromium and chromedriver on PATH (Debian: apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={WIDTH},{height}", "--autoplay-policy=no-user-gesture-required", "--mute-audio"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def type_into(element, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text, Keys.TAB)


def sweep_page(url: str, run: Path, prompts: list[str], png: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser(1300)
    try:
        d.get(url)
        wait = WebDriverWait(d, 120)
        type_into(wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#ufo-steps input")), str(STEPS))
        wait.until(lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                              if t.text == "Sweep and choose"])[0].click()  # fmt: skip
        loras = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#ufo-sweep-loras textarea"))
        type_into(loras, str(run))
        type_into(d.find_element(By.CSS_SELECTOR, "#ufo-sweep-weights textarea, #ufo-sweep-weights input"), WEIGHTS)
        prompt = d.find_element(By.CSS_SELECTOR, "#ufo-sweep-prompt textarea")
        prompt.clear()
        for i, line in enumerate(prompts):
            prompt.send_keys(("\n" if i else "") + line)
        type_into(d.find_element(By.CSS_SELECTOR, "#ufo-sweep-seeds textarea, #ufo-sweep-seeds input"), SEEDS)
        d.find_element(By.ID, "ufo-sweep-run").click()
        done = """const v = document.querySelector('#ufo-sweep-grid video');
                  return !!v && v.readyState >= 2 && v.duration > 0
                         && document.querySelector('#ufo-sweep-recommendation').innerText.includes('Recommended');"""
        WebDriverWait(d, 1800, poll_frequency=2).until(lambda d: d.execute_script(done))
        errors = [t.text for t in d.find_elements(By.CSS_SELECTOR, ".toast-body")]
        if errors:
            raise SystemExit(f"the page shows an error: {errors}")
        # the whole page in one viewport, then the part from the tabs to the settings table
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(WIDTH, height + 200)
        time.sleep(1.5)  # the grid draws a frame
        box = d.execute_script("""const r = e => document.querySelector(e).getBoundingClientRect();
            const tabs = document.querySelector('button[role=tab]').parentElement.getBoundingClientRect();
            return [tabs.top - 8, r('#ufo-sweep-table').bottom + 12, window.devicePixelRatio];""")
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "page.png"
            d.save_screenshot(str(raw))
            save_small(raw, png, box)
    finally:
        d.quit()


def save_small(raw: Path, png: Path, box: list[float]) -> None:
    """Crop to [top, bottom] (CSS px) and store with a 256-colour palette: text and charts stay
    sharp at a fraction of the size of full colour."""
    from PIL import Image

    top, bottom, scale = box
    with Image.open(raw) as im:
        im = im.convert("RGB").crop((0, max(0, int(top * scale)), im.width, min(im.height, int(bottom * scale))))
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    print(f"wrote {png} ({im.width}x{im.height}, {png.stat().st_size // 1024} KB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, required=True, help="a `ufo-video demo --out` folder (its train/ holds the run)")
    p.add_argument("--png", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "ui-sweep.png",
                   help="where to save it (default: this checkout's docs/ui-sweep.png, replaced)")
    p.add_argument("--ui-out", type=Path, help="the UI's --out (default: a new folder in the system's temp folder)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the UI (default 1)")
    args = p.parse_args(argv)
    run = args.demo / "train"  # typed into the page as given (the UI runs in this working directory)
    if not sorted(run.glob("checkpoint-*.safetensors")):
        raise SystemExit(f"{run}: no checkpoint-N.safetensors; run `ufo-video demo --out {args.demo}` first")
    from ufo_video.demo.plan import PROMPTS

    prompts = [p.text for p in PROMPTS[:2]]  # the demo's own first two (its sweep's)
    ui_out = args.ui_out or Path(tempfile.mkdtemp(prefix="ufo-ui-shot-"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ufo_video.cli", "ui", "--port", str(port), "--out", str(ui_out),
                             "--allow-dir", str(run), "--threads", str(args.threads)])  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, proc)
        sweep_page(url, run, prompts, args.png)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"run: {run} ({', '.join(c.stem for c in sorted(run.glob('checkpoint-*.safetensors')))}); weights {WEIGHTS}; "
          f"seeds {SEEDS}; steps {STEPS}; prompts: {prompts}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
