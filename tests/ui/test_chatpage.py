"""The chat page of ``chargen serve``, in a real headless browser: a message in, a streamed reply out."""

from __future__ import annotations

import os

import chargen
from chargen.ui.chatpage import chat_page
from chargen.ui.serve import Server, ServeOptions, ServerThread
from tests.browser import browser  # noqa: F401

WAIT = 60


def test_the_page_names_the_model_and_escapes_it():
    page = chat_page("<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert 'id="api-key"' not in page and 'id="api-key"' in chat_page("m", needs_key=True)


def test_a_message_gets_a_streamed_reply_in_the_browser(browser, tiny_run, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with ServerThread(Server(chargen.load(tiny_run), ServeOptions(model_id="tiny"))) as served:
        browser.get(served.url + "/")
        assert "tiny" in browser.title
        browser.find_element(By.ID, "max-tokens").clear()
        browser.find_element(By.ID, "max-tokens").send_keys("120")
        browser.find_element(By.ID, "input").send_keys("the quick fox")
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, WAIT).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, ".msg[data-done='true']"))
        user = browser.find_element(By.CSS_SELECTOR, ".msg.user").text
        reply = browser.find_element(By.CSS_SELECTOR, ".msg.bot")
        assert user == "the quick fox"
        assert reply.text.strip(), "the reply is empty"
        assert set(reply.text) <= set(chargen.load(tiny_run).tokenizer.chars) | {" ", "\n"}
        # A second turn sends the conversation so far and gets a second reply.
        browser.find_element(By.ID, "input").send_keys("a dog")
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, WAIT).until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, ".msg.bot[data-done='true']")) == 2)
        browser.save_screenshot(str(os.environ.get("CHARGEN_SCREENSHOT", tmp_path / "chat.png")))
        assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error")
