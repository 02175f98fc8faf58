"""A real headless browser for tests: Chromium from the OS packages, driven through WebDriver.

``scripts/install-browser.sh`` (run by ``make test``'s set-up) installs it where it can; where it
cannot be had, the tests that need it skip and say why.
"""

from __future__ import annotations

import shutil

import pytest


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or skip the test with the reason."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium and chromedriver are not installed (scripts/install-browser.sh installs them "
                    "with apt-get as root)")
    return browser, driver


@pytest.fixture
def browser():
    """A headless Chromium WebDriver session (selenium), closed after the test."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()
