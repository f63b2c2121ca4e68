"""The status UI in a real browser (Debian's headless Chromium through Selenium) against
`sentinel run` on a live stack: the simulated chatbot runtime and an exporter of hostile
label values, scraped every second by a real Prometheus.

The tests of this module share one stack and run in order: the latency regression the
first one starts is what the chart test looks for, and the 5xx fault of the silence test
comes last. Screenshots of every page go to build/screenshots/ for people to look at.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from support.browser import axe_violations, chromium, click_and_wait, require_chromium
from support.procs import REPO, http, wait_for
from support.uistack import HOSTILE, UIStack, ui_stack

pytestmark = pytest.mark.e2e

SHOTS = REPO / "build" / "screenshots"
TOKEN = "ui-test-token"
LATENCY = "chat-latency-p95"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prometheus_binaries: None) -> Iterator[UIStack]:
    require_chromium()
    with ui_stack(tmp_path_factory.mktemp("ui")) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def api_slo(stack: UIStack, service: str, slo: str) -> dict[str, Any]:
    _, body, _ = http("GET", f"{stack.url}/api/v1/slos?service={quote(service)}")
    return next(r for r in body if r["slo"] == slo)


REGRESSION: dict[str, float] = {}


def start_regression(stack: UIStack) -> float:
    """Switch the simulator to slow answers once; the time it happened."""
    if "at" not in REGRESSION:
        wait_for(lambda: api_slo(stack, "chatbot-backend", LATENCY)["status"] == "ok", 30, "ok")
        REGRESSION["at"] = time.time()
        assert http("POST", f"{stack.sim_url}/fault?mode=latency")[0] == 200
    return REGRESSION["at"]


def screenshot(driver: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 700), 4000))
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path


def rows(driver: Any) -> list[tuple[str, str, str]]:
    """(service, slo, status) of each overview row, top to bottom, read in one script (the
    page swaps its table in place after each evaluation)."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.slos tbody tr')).map(tr =>"
        " [tr.cells[0].innerText, tr.cells[1].innerText.split(' ')[0], tr.cells[2].innerText]);"
    )
    return [tuple(r) for r in found]


def test_overview_refreshes_in_place_and_lists_the_breaching_slo_first(
    stack: UIStack, browser: Any
) -> None:
    browser.get(stack.url + "/")
    wait_for(lambda: any(r[1] == LATENCY for r in rows(browser)), 20, "latency row")
    browser.execute_script("window.__samePage = true;")
    start_regression(stack)

    def latency_breach() -> bool:
        return any(r[1] == LATENCY and "breach" in r[2] for r in rows(browser))

    # The page updates itself after evaluations: no reload (the marker survives).
    wait_for(latency_breach, 60, "the overview to show the breach without a reload")
    assert browser.execute_script("return window.__samePage === true;")
    listed = rows(browser)
    statuses = [r[2] for r in listed]
    first_ok = next(i for i, s in enumerate(statuses) if "ok" in s and "breach" not in s)
    latency_at = next(i for i, r in enumerate(listed) if r[1] == LATENCY)
    assert latency_at < first_ok, listed
    assert all("breach" in s for s in statuses[:first_ok]), listed
    assert api_slo(stack, "chatbot-backend", LATENCY)["status"] == "breach"
    screenshot(browser, "overview")


def test_service_chart_shades_the_breach_where_the_regression_began(
    stack: UIStack, browser: Any
) -> None:
    began = start_regression(stack)
    wait_for(lambda: api_slo(stack, "chatbot-backend", LATENCY)["status"] == "breach", 60, "breach")

    def spans() -> list[tuple[float, float]]:
        browser.get(stack.url + "/services/chatbot-backend?range=15m")
        chart = browser.find_element(By.CSS_SELECTOR, "section.panel svg.chart")
        return [
            (float(r.get_attribute("data-from")), float(r.get_attribute("data-to")))
            for r in chart.find_elements(By.CSS_SELECTOR, "rect.breach")
        ]

    found = wait_for(spans, 30, "a breach span on the latency chart")
    # The regression starts at `began`; the P95 over a 15 s window crosses 1.5 s within
    # that window (plus a scrape and a 2 s step). Before it, the chart shows no breach.
    assert any(began - 3 <= start <= began + 30 for start, _ in found), (began, found)
    assert all(end >= began - 3 for _, end in found), (began, found)
    title = browser.find_element(By.CSS_SELECTOR, "section.panel svg.chart title").text
    assert LATENCY in title
    screenshot(browser, "service")


def test_hostile_label_values_render_as_text_and_run_no_script(
    stack: UIStack, browser: Any
) -> None:
    wait_for(
        lambda: (
            len(
                [r for r in http("GET", f"{stack.url}/api/v1/slos")[1] if r["slo"] == "hostile-5xx"]
            )
            == 3
        ),
        30,
        "three hostile instances",
    )
    pages = ["/", "/incidents", "/silences?" + "&".join(f"service={quote(v)}" for v in HOSTILE[:1])]
    pages += [f"/services/{quote(v, safe='')}" for v in HOSTILE]
    for page in pages:
        browser.get(stack.url + page)
        text = browser.find_element(By.TAG_NAME, "body").text
        if page == "/":
            for value in HOSTILE:
                assert value in text, value
        elif page.startswith("/services/"):
            service = HOSTILE[pages.index(page) - 3]
            assert browser.find_element(By.TAG_NAME, "h1").text == service
        assert browser.execute_script("return window.__xss === undefined;"), page
        assert browser.find_elements(By.CSS_SELECTOR, 'img[src="x"], img') == [], page
        scripts = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.getAttribute('src'));"
        )
        assert len(scripts) == 1 and scripts[0].startswith("/static/ui.js"), (page, scripts)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    screenshot(browser, "service-vietnamese")


def test_every_page_has_no_serious_accessibility_violation(stack: UIStack, browser: Any) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    pages = {
        "overview": "/",
        "service": "/services/chatbot-backend?range=15m",
        "service-grouped": f"/services/{quote(HOSTILE[2], safe='')}",
        "incidents": "/incidents",
        "gate": f"/gate?service=chatbot-backend&since={since}",
        "silences": "/silences?service=chatbot-backend&slo=chat-latency-p95",
        "login": "/login",
    }
    problems = {}
    for name, page in pages.items():
        browser.get(stack.url + page)
        found = axe_violations(browser)
        if found:
            problems[name] = found
        screenshot(browser, name if name not in ("overview", "service") else f"{name}-axe")
    assert problems == {}
    browser.get(stack.url + pages["gate"])
    verdict = browser.find_element(By.CSS_SELECTOR, ".verdict strong").text
    assert verdict in ("PASS", "FAIL", "PENDING")
    judged = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[3].text
        for row in browser.find_elements(By.CSS_SELECTOR, ".verdict tbody tr")
    }
    assert judged == {LATENCY: "1.5 s", "http-5xx-ratio": "0.5 %"}  # thresholds in units


def test_keyboard_reaches_navigation_filters_and_rows_with_a_visible_focus(
    stack: UIStack, browser: Any
) -> None:
    browser.get(stack.url + "/")
    keys = ActionChains(browser)
    keys.send_keys(Keys.TAB).perform()
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content"
    keys.send_keys(Keys.ENTER).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    seen = []
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        element = browser.switch_to.active_element
        if element.tag_name == "body":  # past the last control: focus left the page
            break
        outline = browser.execute_script(
            "return getComputedStyle(arguments[0]).outlineStyle;", element
        )
        seen.append((element.tag_name, element.get_attribute("name") or element.text, outline))
    names = [s[1] for s in seen]
    assert "q" in names and "status" in names and "severity" in names, seen
    links = [s for s in seen if s[0] == "a"]
    assert any(s[1] == "chatbot-backend" or s[1] in HOSTILE for s in links), seen
    assert all(s[2] != "none" for s in seen), seen
    # The filter works from the keyboard: typing narrows the rows.
    search = browser.find_element(By.NAME, "q")
    search.send_keys("latency")
    visible = [
        r for r in browser.find_elements(By.CSS_SELECTOR, "table.slos tbody tr") if r.is_displayed()
    ]
    assert visible and all(LATENCY in r.text for r in visible)


def test_status_is_shown_in_words_not_by_colour_alone(stack: UIStack, browser: Any) -> None:
    browser.get(stack.url + "/")
    for tr in browser.find_elements(By.CSS_SELECTOR, "table.slos tbody tr"):
        status = tr.find_elements(By.TAG_NAME, "td")[2].text
        assert status.split(" ")[-1] in ("breach", "data", "ok"), status
    browser.get(stack.url + "/services/chatbot-backend?range=15m")
    for rect in browser.find_elements(By.CSS_SELECTOR, "rect.breach"):
        assert rect.get_attribute("fill").startswith("url(#")  # hatched, not only tinted
        assert "breach" in rect.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert "breach" in browser.find_element(By.CSS_SELECTOR, "figcaption").text


def test_silence_created_from_the_service_page_silences_the_alert(
    stack: UIStack, browser: Any
) -> None:
    browser.get(stack.url + "/services/chatbot-backend?range=15m")
    panel = browser.find_element(By.ID, "slo-1")  # http-5xx-ratio
    assert "http-5xx-ratio" in panel.find_element(By.TAG_NAME, "h2").text
    click_and_wait(browser, panel.find_element(By.PARTIAL_LINK_TEXT, "Silence"))
    assert browser.find_element(By.NAME, "m0.value").get_attribute("value") == "chatbot-backend"
    assert browser.find_element(By.NAME, "m1.value").get_attribute("value") == "http-5xx-ratio"
    browser.find_element(By.ID, "duration").clear()
    browser.find_element(By.ID, "duration").send_keys("1h")
    browser.find_element(By.ID, "comment").send_keys("deploying a fix — đang sửa")
    click_and_wait(browser, (By.CSS_SELECTOR, "form.stack button[type=submit]"))
    assert "created" in browser.find_element(By.CSS_SELECTOR, ".ok-msg").text

    _, silences, _ = http("GET", f"{stack.url}/api/v1/silences")
    [silence] = [s for s in silences if s["status"] == "active"]
    assert {(m["name"], m["value"]) for m in silence["matchers"]} == {
        ("service", "chatbot-backend"),
        ("slo", "http-5xx-ratio"),
    }
    assert silence["comment"] == "deploying a fix — đang sửa"

    # The 5xx burst fires the alert, and the silence keeps it from notifying.
    assert http("POST", f"{stack.sim_url}/fault?mode=5xx")[0] == 200

    def firing() -> bool:
        _, body, _ = http("GET", f"{stack.url}/api/v1/alerts")
        return any(
            a["key"] == "chatbot-backend/http-5xx-ratio" and a["state"] == "firing"
            for a in body["alerts"]
        )

    wait_for(firing, 60, "the 5xx alert firing")
    wait_for(
        lambda: "alert firing silenced: chatbot-backend/http-5xx-ratio" in stack.daemon.log(),
        10,
        "the silenced firing in the log",
    )
    browser.get(stack.url + "/incidents")
    row = next(
        tr
        for tr in browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
        if "http-5xx-ratio" in tr.text
    )
    assert "silenced" in row.text and "none (silenced)" in row.text
    screenshot(browser, "incidents")
    browser.get(stack.url + "/silences")
    screenshot(browser, "silences")


@pytest.fixture(scope="module")
def token_stack(
    tmp_path_factory: pytest.TempPathFactory, prometheus_binaries: None
) -> Iterator[UIStack]:
    require_chromium()
    # One row per overview page: the five instances make five pages.
    with ui_stack(tmp_path_factory.mktemp("ui-token"), token=TOKEN, page_rows=1) as live:
        yield live


def test_signing_in_is_required_for_the_gate_and_silences_when_a_token_is_set(
    token_stack: UIStack,
) -> None:
    url = token_stack.url
    with chromium() as browser:
        browser.get(url + "/gate")
        assert browser.current_url.startswith(url + "/login?next=")
        browser.get(url + "/silences")
        assert browser.find_elements(By.NAME, "m0.name") == []  # no form before sign-in
        assert "Sign in" in browser.find_element(By.TAG_NAME, "main").text

        browser.get(url + "/login?next=/gate")
        screenshot(browser, "login")
        browser.find_element(By.ID, "token").send_keys("wrong")
        click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "main form button"))
        assert "not Sentinel's API token" in browser.find_element(By.CSS_SELECTOR, ".error").text
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "main form button"))
        assert browser.current_url == url + "/gate"
        assert TOKEN not in browser.current_url
        [session] = [c for c in browser.get_cookies() if c["name"] == "sentinel_session"]
        assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        assert TOKEN not in session["value"]
        assert browser.execute_script("return document.cookie;") == ""  # HttpOnly

        browser.get(url + "/silences?service=chatbot-backend")
        browser.find_element(By.ID, "comment").send_keys("signed-in change")
        click_and_wait(
            browser, browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]")
        )
        assert "created" in browser.find_element(By.CSS_SELECTOR, ".ok-msg").text
        _, silences, _ = http("GET", f"{url}/api/v1/silences")
        assert [s["comment"] for s in silences] == ["signed-in change"]

        click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, ".session button"))
        browser.get(url + "/gate")
        assert browser.current_url.startswith(url + "/login")


def test_typing_a_filter_searches_every_page_not_only_the_one_shown(
    token_stack: UIStack,
) -> None:
    url = token_stack.url

    def pages(browser: Any) -> str:  # read in one script: the table is swapped in place
        return str(
            browser.execute_script(
                "var p = document.querySelector('nav.pager span'); return p ? p.innerText : '';"
            )
        )

    with chromium() as browser:
        browser.get(url + "/")
        wait_for(lambda: pages(browser) == "Page 1 of 5", 30, "five pages")
        assert len(rows(browser)) == 1
        browser.find_element(By.NAME, "q").send_keys("uote")
        # The server's answer replaces the page: the one match, with no pager left (the
        # script alone could only hide rows of the page it has).
        wait_for(lambda: pages(browser) == "", 10, "the filtered answer")
        wait_for(lambda: len(rows(browser)) == 1, 10, "one row")
        [(service, slo, _)] = rows(browser)
        assert service == HOSTILE[0] and slo == "hostile-5xx"
        # The address once the last answer is in (an answer for "uo" may come first).
        wait_for(lambda: browser.current_url == url + "/?q=uote", 10, "the filtered address")
        screenshot(browser, "overview-filtered-across-pages")
        browser.find_element(By.NAME, "q").clear()
        browser.find_element(By.NAME, "q").send_keys(" ")  # an input event with no text
        wait_for(lambda: browser.current_url == url + "/", 10, "the unfiltered address")
        wait_for(lambda: pages(browser) == "Page 1 of 5", 10, "the pager again")
        click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "nav.pager a[rel=next]"))
        assert browser.current_url == url + "/?page=2"
        assert pages(browser) == "Page 2 of 5"
        screenshot(browser, "overview-page-2")
