"""`python web_demo.py` in a real headless browser (Debian's Chromium through Selenium): the page loads with the
bundled image, a question gets the right answer, accepted drafts show in green, the kept-token picture and the
statistics appear beside it, the chat keeps its turns, and an impossible R is one clear message."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from twigvlm.world.shapes import SHORT_ANSWER_SUFFIX, color_question, demo_scene, describe

pytestmark = pytest.mark.needs_world

ROOT = Path(__file__).resolve().parents[1]
SCENE = demo_scene(0)[1]  # what assets/shapes.png shows
CENTER = color_question(next(shape for shape in SCENE.shapes if shape.region == "center"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BROWSER_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("web") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "web_demo.py", "--device", "cpu", "--port", str(port)],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"web_demo.py stopped:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"web_demo.py did not serve {url}:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("flags, message", [
    (["--base-model", "somewhere"], "--twig-block is required with --base-model"),
    (["--port", "70000"], "--port 70000: a port is a number from 1 to 65535"),
])
def test_a_bad_flag_is_one_line_before_anything_loads(flags, message):
    result = subprocess.run([sys.executable, "web_demo.py", *flags], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and "loading" not in result.stderr


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install -y chromium "
                    "chromium-driver; .ci/run does it): the browser test needs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_a_question_on_the_bundled_image_in_the_browser(server, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException])  # the page re-renders
    find = browser.find_element

    def answers(done: bool = False) -> list[str]:
        """The answers in the chat, read in one step (only those done streaming: done=True)."""
        return browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(a => a.textContent)",
            "#transcript .answer.done" if done else "#transcript .answer")

    def text(selector: str) -> str:
        return browser.execute_script("return document.querySelector(arguments[0]).innerText", selector)

    def ask(question: str, turns: int | None) -> None:
        """Ask; wait for answer number `turns` to be done (None: for a message in the status line)."""
        box = find(By.CSS_SELECTOR, "#question textarea")
        box.clear()
        box.send_keys(question)
        find(By.CSS_SELECTOR, "#ask").click()
        if turns is None:
            wait.until(lambda _: browser.execute_script("return document.querySelector('#status .error')"))
        else:
            wait.until(lambda _: len(answers(done=True)) == len(answers()) == turns)

    browser.get(server)
    wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#image img"))  # the bundled image, preselected
    assert find(By.CSS_SELECTOR, "#short-answers input").is_selected()  # the tiny world's one-word answers

    ask(CENTER.question.removesuffix(SHORT_ANSWER_SUFFIX), turns=1)  # "What color is the shape in the center?"
    wait.until(lambda _: browser.execute_script("return document.querySelector('#kept img')?.src"))
    assert answers() == [CENTER.answer]  # "Blue", from the scene the bundled image was drawn from
    stats = text("#statistics")
    assert "acceptance" in stats and "tokens per verify step" in stats and "visual tokens, layers 2-18\t120" in stats

    ask("How many shapes are there?", turns=2)  # the chat goes on about the same image
    assert len(browser.find_elements(By.CSS_SELECTOR, "#transcript .user")) == 2

    find(By.CSS_SELECTOR, "#new-chat").click()
    wait.until(lambda _: not answers())
    find(By.CSS_SELECTOR, "#short-answers input").click()
    budget = find(By.CSS_SELECTOR, "#R input")
    budget.send_keys(Keys.CONTROL, "a")
    budget.send_keys("all", Keys.ENTER)
    ask("Describe the image in detail.", turns=1)  # a long answer: the twig's drafts are accepted
    assert answers() == [describe(SCENE)]
    drafts = browser.find_elements(By.CSS_SELECTOR, "#transcript .draft")
    assert drafts and drafts[0].value_of_css_property("color") == "rgba(21, 128, 61, 1)"  # green

    budget.send_keys(Keys.CONTROL, "a")
    budget.send_keys("1000", Keys.ENTER)
    ask("Describe the image in detail.", turns=None)
    assert "R=1000 visual tokens per layer is out of range" in text("#status .error")
    assert len(answers()) == 1  # the failed turn is not kept
