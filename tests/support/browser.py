"""Debian's headless Chromium driven by Selenium, for the status UI's browser tests.

Only Debian's binaries are used (`chromium`, `chromium-driver`): Selenium Manager would
download a browser, which cannot work here. In CI (`CI` set) a missing binary fails the
test; elsewhere it skips with the apt-get line to run.

axe-core is vendored under `tests/support/vendor/axe-core/` (MPL-2.0, licence beside it)
and injected into each page: the tests need no network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--lang=en-US",
)


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium(downloads: Path | None = None) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory), quit afterwards."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sentinel-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def axe_violations(driver: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """Run axe-core on the current page; the violations of the given impacts, as lines."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations), e => done([{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}]));"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(" ".join(n.get("target", [])) for n in v["nodes"][:3])
        for v in result
        if v.get("impact") in impacts
    ]


def click_and_wait(browser: Any, element: Any, timeout: float = 30.0) -> None:
    """Click something that loads a new page and wait until it has: a click returns as
    soon as the event is dispatched, so reading the next page at once races the server
    (seen on a loaded 2-core CI machine). `element` may be a (By, value) locator: then a
    click chromedriver loses ("Node with given id does not belong to the document", its
    inspector's error, seen once on a loaded CI machine on a page nothing rewrites) is
    retried on the element found again, up to three times."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    if isinstance(element, tuple):
        for attempt in range(3):
            try:
                browser.find_element(*element).click()
                break
            except WebDriverException as exc:
                if attempt == 2 or "does not belong to the document" not in str(exc):
                    raise
                time.sleep(0.2)
    else:
        element.click()

    def gone(_: object) -> bool:
        """`staleness_of(old)`, also for the old page's node that chromedriver's inspector
        reports as "does not belong to the document" instead of stale (seen with chromium
        156 when the new page replaced it mid-check: the old page is gone either way)."""
        try:
            return bool(expected_conditions.staleness_of(old)(browser))
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise

    WebDriverWait(browser, timeout).until(gone)
    WebDriverWait(browser, timeout).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )
