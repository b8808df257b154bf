"""`marlin app` in a real browser: headless Chromium uploads a clip and sees every output appear.

Needs gradio and selenium (the test extra) and Debian's `chromium` and `chromium-driver` packages. Without them the
module is skipped with that instruction; `.ci/run` installs them and sets `MARLIN_REQUIRE_BROWSER`, so that in CI a
missing browser is a failure, not a skip. The app runs on a tiny pretraining model and reads no network.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import marlin_transformers
from conftest import require_optional
from video_factory import encode_video, moving_face_frames

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Chromium's flags for a closed machine: without the background-networking ones its own connections are refused and
# it stalls; a fresh profile per run (--user-data-dir, added below) keeps runs apart.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2000",
)

missing = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
missing += [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
install = "pip install -e '.[test]' and apt-get install chromium chromium-driver"
require_optional(missing, install, "MARLIN_REQUIRE_BROWSER", allow_module_level=True)

STARTUP_SECONDS = 60  # the app process imports torch and gradio and checks the model
RESULT_SECONDS = 60  # the analysis of two windows of the tiny model, MTCNN included


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"marlin app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"marlin app did not listen on {port} within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def app_url(tiny_pretraining_dir, tmp_path):
    """`marlin app --model TINY --port FREE` in its own process (its files in tmp_path), stopped after the test."""
    port = free_port()
    log = tmp_path / "app.log"
    # The package this test imported (wherever it was installed from); its work folder and uploads in tmp_path.
    source = str(Path(marlin_transformers.__file__).resolve().parents[1])
    path = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "marlin_transformers.cli", "app", "--model", str(tiny_pretraining_dir)]
    with open(log, "w") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=output, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    try:
        wait_for_port(port, process, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_upload_a_clip_and_see_every_output(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    frames, _ = moving_face_frames(40)
    clip = encode_video(tmp_path / "face.mp4", frames, fps=20)
    screenshot = tmp_path / "marlin-app.png"
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"this is no video" * 64)
    wait = WebDriverWait(browser, RESULT_SECONDS)

    def upload(path: Path) -> None:
        browser.get(app_url)
        field = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#input-video input[type=file]")))
        field.send_keys(str(path))

    try:
        # A bad upload gets the CLI's one line, as a Gradio error.
        upload(bad)
        wait.until(ready.element_to_be_clickable((By.ID, "analyse"))).click()
        wait.until(lambda page: "cannot be opened as a video" in page.find_element(By.TAG_NAME, "body").text)

        upload(Path(clip))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#input-video video")))  # uploaded
        wait.until(ready.element_to_be_clickable((By.ID, "analyse"))).click()

        def shown(selector: str, attribute: str = "src"):
            return wait.until(
                lambda page: next(
                    (e for e in page.find_elements(By.CSS_SELECTOR, selector) if e.get_attribute(attribute)), None
                )
            )

        for video in ("#faces-video video", "#reconstruction-video video"):
            assert shown(video).get_attribute("src").split("?")[0].endswith(".mp4")
        for picture in ("#crops img", "#mask img", "#similarity img"):
            assert shown(picture).get_attribute("src").split("?")[0].endswith(".png")
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#downloads a[href]")) >= 2)
        links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a[href]")]
        assert {link.split("?")[0].rsplit("/", 1)[-1] for link in links} == {"face.npy", "manifest.jsonl"}, links
        summary = shown("#summary table", "outerHTML").text
        assert "0-30" in summary and "9-39" in summary  # both windows, with their frames
    finally:
        browser.save_screenshot(str(screenshot))
        print(f"screenshot of the app: {screenshot}")
    assert screenshot.stat().st_size > 0
