"""The chat page in a real browser (Debian's chromium + chromium-driver, driven by selenium): pick
an image, ask, the streamed answer appears and equals the API's greedy answer, the conversation
continues, errors are messages, a new conversation clears it; also an image dropped on the page."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from serve_helpers import running, tiny_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


def test_the_page_uses_nothing_from_the_network():
    """It must work offline: no CDN, no remote font or script."""
    from allava.serve.app import STATIC, static_file

    for name in STATIC:
        text = static_file(name).decode()
        assert not re.search(r"(src|href)=\"(https?:)?//|url\((https?:)?//|import .* from ['\"]https?:", text), name


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_chat_page_streams_answers_in_chromium(browser, backbones, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from allava.evaluate.generate import Answerer
    from allava.serve.batching import Engine

    ckpt = tiny_checkpoint(backbones, tmp_path / "tiny-llava")
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(image)
    engine = Engine(Answerer(ckpt))
    wait = WebDriverWait(browser, 60)
    with running(ckpt, engine, max_new_tokens=24) as url:
        import base64

        data = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        want = httpx.post(url + "/v1/chat/completions", timeout=60, json={"max_tokens": 24, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data}},
                                         {"type": "text", "text": "what colour is the shape"}]}]}).json()
        want = want["choices"][0]["message"]["content"]
        assert want

        browser.get(url + "/")
        wait.until(lambda d: "tiny-llava" in d.find_element(By.ID, "model").text)
        browser.find_element(By.CSS_SELECTOR, "#settings summary").click()
        browser.find_element(By.ID, "max-tokens").clear()
        browser.find_element(By.ID, "max-tokens").send_keys("24")
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("src").startswith("data:image/png"))
        browser.find_element(By.ID, "question").send_keys("what colour is the shape")
        browser.find_element(By.ID, "send").click()

        def answers(d):
            done = d.find_elements(By.CSS_SELECTOR, ".assistant[data-done='true'] .text")
            return [e.text for e in done]

        wait.until(lambda d: len(answers(d)) == 1)
        assert answers(browser) == [want]  # streamed into the page, equal to the API's answer
        assert browser.find_elements(By.CSS_SELECTOR, ".user img")  # the asked-about image is shown
        assert not browser.find_elements(By.CSS_SELECTOR, ".error")

        browser.find_element(By.ID, "question").send_keys("and the shape?")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(answers(d)) == 2)
        history = browser.execute_script("return state.messages")
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        assert history[1]["content"] == want and isinstance(history[0]["content"], list)
        browser.save_screenshot(str(tmp_path / "chat.png"))
        assert (tmp_path / "chat.png").stat().st_size > 1000

        browser.find_element(By.ID, "max-tokens").clear()
        browser.find_element(By.ID, "max-tokens").send_keys("100000")
        browser.find_element(By.ID, "question").send_keys("too long")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
        error = browser.find_element(By.CSS_SELECTOR, ".error").text
        assert error.startswith("400: max_tokens") and "--max-new-tokens" in error
        assert len(browser.execute_script("return state.messages")) == 4  # the failed question is not kept

        browser.find_element(By.ID, "new").click()
        assert browser.find_elements(By.CSS_SELECTOR, "#log .msg") == []
        assert browser.execute_script("return state.messages") == []

        browser.find_element(By.ID, "max-tokens").clear()
        browser.find_element(By.ID, "max-tokens").send_keys("24")
        browser.execute_script("""
            const bytes = Uint8Array.from(atob(arguments[0].split(',')[1]), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'red.png', {type: 'image/png'}));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
        """, data)
        wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("src") == data)
        browser.find_element(By.ID, "question").send_keys("what colour is the shape")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(answers(d)) == 1)
        assert answers(browser) == [want]  # a dropped image is the same image
        browser.save_screenshot(str(tmp_path / "chat-dropped.png"))
    print(f"screenshots: {tmp_path / 'chat.png'}, {tmp_path / 'chat-dropped.png'}")
