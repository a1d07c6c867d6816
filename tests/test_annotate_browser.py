"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
log in, vote with clicks and with the H/S/U keys, undo, and find the rows in the database."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from annotate_helpers import SMALL_ITEMS, serve_in_thread, small_experiment

from data_prep.annotate import db
from data_prep.annotate.server import make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="Chromium and ChromeDriver are not installed "
        "(apt-get install chromium chromium-driver, as tests/install-test-deps.sh does as root)",
    ),
]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,1200",
)
WAIT_S = 30


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_vote_by_click_and_key_then_undo(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    dbfile = tmp_path / "browser.sqlite"
    server = make_server(small_experiment(tmp_path / "exp"), str(dbfile), "127.0.0.1", 0, 80.0)
    serve_in_thread(server)
    token = db.add_annotator(server.engine, "alice")
    wait = WebDriverWait(browser, WAIT_S)

    def ready_with(voted: int) -> str:
        """Wait until the page shows a loaded item and ``voted`` votes; return the item id."""
        # One script reads both, so that the page cannot change between the two reads.
        wait.until(
            lambda d: d.execute_script(
                "return document.body.dataset.state === 'ready' && "
                "document.getElementById('progress-text').textContent === arguments[0];",
                f"{voted} of 5 items voted",
            )
        )
        return browser.find_element(By.TAG_NAME, "body").get_attribute("data-item")

    try:
        browser.get(server.url)
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "login").click()
        first = ready_with(0)
        assert first in SMALL_ITEMS
        assert browser.find_element(By.ID, "who").text == "annotator: alice"
        frame = browser.find_element(By.ID, "frame")
        assert browser.execute_script("return arguments[0].naturalWidth", frame) == 256
        # Player and display controls.
        browser.find_element(By.ID, "play").click()
        assert browser.find_element(By.ID, "play").text == "Play"
        browser.execute_script(
            "const c = document.getElementById('contrast'); c.value = '250';"
            "c.dispatchEvent(new Event('input'));"
        )
        assert "contrast(250%)" in frame.get_attribute("style")
        browser.execute_script(
            "const s = document.getElementById('slider'); s.value = '7';"
            "s.dispatchEvent(new Event('input'));"
        )
        assert browser.find_element(By.ID, "frame-no").text == "8/10"
        # Vote with a click (and a reason), then with the keys S and U, then undo.
        browser.find_element(By.ID, "why").send_keys("round, phase-bright cells")
        browser.find_element(By.ID, "vote-healthy").click()
        second = ready_with(1)
        ActionChains(browser).send_keys("s").perform()
        third = ready_with(2)
        ActionChains(browser).send_keys("u").perform()
        ready_with(3)
        browser.find_element(By.ID, "undo").click()
        assert ready_with(2) == third  # the undone item is shown again
        assert len({first, second, third}) == 3
        with sqlite3.connect(dbfile) as conn:
            rows = conn.execute(
                "SELECT votes.item_id, annotators.name, votes.label, votes.why FROM votes "
                "JOIN annotators ON annotators.id = votes.annotator_id ORDER BY votes.id"
            ).fetchall()
        assert rows == [
            (first, "alice", "healthy", "round, phase-bright cells"),
            (second, "alice", "sick", ""),
        ]
        # The concordance page (same browser, token remembered).
        browser.get(server.url + "concordance")
        wait.until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
        )
        cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#annotators td")]
        assert cells == ["alice", "1", "1", "0", "2"]
    finally:
        server.shutdown()
        server.server_close()
