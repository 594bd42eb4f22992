"""The web app in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromidriver (`scripts/setup_env.sh` installs both). Opens the page, types a prompt and a LoRA,
types weights the page must refuse (text, above 2) and one it takes, clicks Generate, sees one
progress bar while it runs (not one per output), waits for a <video> that the browser can play,
and saves a screenshot (set UFO_UI_SCREENSHOT=path to keep it, e.g. for docs/). The Data tab: a check, then an error that leaves no old summary behind."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


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


def toast_with(browser, text: str, timeout: float = 60) -> str:
    """The text of an error toast that contains `text` (waits for it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import TimeoutException

    seen: list[str] = []

    def found(d):
        seen[:] = [t.text for t in d.find_elements(By.CSS_SELECTOR, ".toast-body")]
        return next((t for t in seen if text in t), False)

    try:
        return WebDriverWait(browser, timeout).until(found)
    except TimeoutException:
        raise AssertionError(f"no toast says {text!r}; toasts: {seen}") from None


def set_number(element, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text, Keys.TAB)


def test_generate_in_a_real_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ufo_video.ui.app import build_app, launch

    lora = make_run_checkpoints(tmp_path / "run", steps=(100,)) / "checkpoint-100.safetensors"
    out = tmp_path / "out"
    app = build_app(TINY_BASE, out, allow_dirs=[tmp_path])
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
        steps = browser.find_element(By.CSS_SELECTOR, "#ufo-steps input")
        set_number(steps, "3")
        # a weight that is not a number or above 2 is refused by name (a slider made them 0 and 2)
        for typed, named in (("abc", "LoRA 1 weight: empty or not a number"), ("5", "LoRA 1 weight: 5 is above the maximum 2")):
            set_number(weight, typed)
            browser.find_element(By.ID, "ufo-generate").click()
            toast_with(browser, named)
        assert not (out / "generate").is_dir() or not list((out / "generate").glob("*.mp4"))
        set_number(weight, "0.1")
        # the most progress trackers shown at once while it runs (each output drew one, overlapping)
        browser.execute_script("""window.ufoTrackers = 0;
            const count = () => document.querySelectorAll('[data-testid=status-tracker]:not(.hide)').length;
            new MutationObserver(() => { window.ufoTrackers = Math.max(window.ufoTrackers, count()); })
                .observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});""")
        browser.find_element(By.ID, "ufo-generate").click()
        playable = """const v = document.querySelector('#ufo-video video');
                      return !!v && v.readyState >= 2 && v.duration > 0 && !v.error;"""
        WebDriverWait(browser, 120).until(lambda d: d.execute_script(playable))
        frames_shown = browser.execute_script("return document.querySelector('#ufo-video video').videoWidth")
        assert frames_shown == 64
        assert browser.execute_script("return window.ufoTrackers") == 1  # one bar, on the video
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


def test_data_tab_wraps_long_problems_and_clears_old_results_on_an_error(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_train_helpers import make_dataset
    from ufo_video.ui.app import build_app, launch

    root = make_dataset(tmp_path / "ds")
    meta = json.loads((root / "metadata.json").read_text())
    meta.append({"file_path": "train/" + "a-long-clip-name-" * 12 + ".mp4", "text": "gone", "type": "video"})
    (root / "metadata.json").write_text(json.dumps(meta))
    app = build_app(TINY_BASE, tmp_path / "out", allow_dirs=[tmp_path])
    port = free_port()
    launch(app, "127.0.0.1", port, block=False)
    browser = driver()
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Data"])[0].click()
        meta_box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#ufo-data-meta textarea"))
        meta_box.send_keys(str(root / "metadata.json"))
        browser.find_element(By.ID, "ufo-data-check").click()
        WebDriverWait(browser, 120).until(lambda d: "7 entries, 6 ok, 1 problem" in d.find_element(By.ID, "ufo-data-summary").text)
        # every cell with text lies inside the table: long paths and messages wrap instead of running off the right
        cut = browser.execute_script("""const t = document.querySelector('#ufo-data-problems');
            const right = t.getBoundingClientRect().right;
            return [...t.querySelectorAll('td')].filter(c => c.innerText.trim() && c.getBoundingClientRect().right > right + 1)
                .map(c => c.innerText.slice(0, 40));""")  # fmt: skip
        assert cut == [], cut
        assert "a-long-clip-name" in browser.find_element(By.ID, "ufo-data-problems").text
        meta_box.clear()
        meta_box.send_keys(str(tmp_path / "missing.json"))
        browser.find_element(By.ID, "ufo-data-check").click()
        toast_with(browser, "metadata file: file not found")
        assert browser.find_element(By.ID, "ufo-data-summary").text.strip() == ""
        assert "a-long-clip-name" not in browser.find_element(By.ID, "ufo-data-problems").text
    finally:
        browser.quit()
        app.close()


def test_sweep_refuses_a_keep_share_out_of_range_and_size_labels_follow_the_model(tmp_path: Path) -> None:
    """The keep-motion field is a number box the server checks: 2 and text are refused by the field's
    name (a slider clamped 2 to 1 and turned text into 0 unseen). The size fields name the rule of
    the model folder typed in the shared settings (the tiny base: 2k+1 frames; LTX-2: 8k+1)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ufo_video.ui.app import build_app, launch

    configs = Path(__file__).resolve().parent.parent / "src" / "ufo_video" / "assets" / "ltx2-configs"
    app = build_app(TINY_BASE, tmp_path / "out", allow_dirs=[tmp_path, configs])
    port = free_port()
    launch(app, "127.0.0.1", port, block=False)
    browser = driver()
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        page = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
        wait.until(lambda d: "frames (2k+1)" in page(d))
        model = [b for b in browser.find_elements(By.CSS_SELECTOR, "label textarea, label input[type=text]")
                 if b.get_attribute("value") == str(TINY_BASE)][0]  # fmt: skip
        model.clear()
        model.send_keys(str(configs / "ltx-2-19b-dev"))
        set_number(browser.find_element(By.CSS_SELECTOR, "#ufo-steps input"), "3")  # leaves the model field
        wait.until(lambda d: "frames (8k+1)" in page(d) and "height (multiple of 32)" in page(d))
        wait.until(lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Sweep and choose"])[0].click()
        keep = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#ufo-sweep-keep input[type=number]"))
        for typed, named in (("2", "2 is above the maximum 1"), ("abc", "empty or not a number")):
            set_number(keep, typed)
            browser.find_element(By.ID, "ufo-sweep-run").click()
            toast_with(browser, f"keep at least this share of the base's motion (0-1): {named}")
        assert not (tmp_path / "out" / "sweeps").is_dir() or not any((tmp_path / "out" / "sweeps").iterdir())
    finally:
        browser.quit()
        app.close()
