"""The web app in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromidriver (`scripts/setup_env.sh` installs both). Opens the page, types a prompt and a LoRA,
sets its weight, clicks Generate, waits for a <video> that the browser can play, and saves a
screenshot (set UFO_UI_SCREENSHOT=path to keep it, e.g. for docs/)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from test_sweep_cli import TINY_BASE, make_run_checkpoints
from test_ui import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are needed: run scripts/setup_env.sh (as root)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1300",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_generate_in_a_real_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from ufo_video.ui.app import build_app, launch

    lora = make_run_checkpoints(tmp_path / "run", steps=(100,)) / "checkpoint-100.safetensors"
    out = tmp_path / "out"
    app = build_app(TINY_BASE, out)
    port = free_port()
    launch(app, "127.0.0.1", port, block=False)
    browser = driver()
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        prompt = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#ufo-prompt textarea"))
        prompt.send_keys("a red square moves to the right")
        path = browser.find_element(By.CSS_SELECTOR, "#ufo-lora-1 textarea, #ufo-lora-1 input")
        path.send_keys(str(lora))
        weight = browser.find_element(By.CSS_SELECTOR, "#ufo-weight-1 input[type=number]")
        weight.send_keys(Keys.CONTROL, "a")
        weight.send_keys("0.1", Keys.TAB)
        steps = browser.find_element(By.CSS_SELECTOR, "#ufo-steps input")
        steps.send_keys(Keys.CONTROL, "a")
        steps.send_keys("3", Keys.TAB)
        browser.find_element(By.ID, "ufo-generate").click()
        playable = """const v = document.querySelector('#ufo-video video');
                      return !!v && v.readyState >= 2 && v.duration > 0 && !v.error;"""
        WebDriverWait(browser, 120).until(lambda d: d.execute_script(playable))
        frames_shown = browser.execute_script("return document.querySelector('#ufo-video video').videoWidth")
        assert frames_shown == 64
        time.sleep(0.5)  # let the player draw a frame for the screenshot
        shot = Path(os.environ.get("UFO_UI_SCREENSHOT") or tmp_path / "ui.png")
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()
        app.close()
    [side] = (out / "generate").glob("*.json")
    record = json.loads(side.read_text())
    assert record["request"]["prompt"] == "a red square moves to the right"
    assert record["settings"]["loras"] == [{"path": str(lora.resolve()), "weight": 0.1}]
    assert record["settings"]["num_inference_steps"] == 3
