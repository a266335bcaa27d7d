"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven
by Selenium) against the real stack: the local Jetstream server → ``bge ingest`` → Kafka →
``bge worker`` (traced to Jaeger) → Postgres, with the bundled recording and generated events of
the last hour. Every page renders with data, the charts draw, a click from a candidate reaches its
event journey and shows its trace's spans, the pages fit a phone's width, and nothing logs an
error to the console. Screenshots are kept in ``.state/test-artifacts/dashboard/``."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from streams.cli import crawl as crawl_cli
from streams.local import corpus
from streams.local.jetstream_server import JetstreamServer
from tests.conftest import ROOT
from tests.integration.ingest_support import kill
from tests.integration.worker_support import (
    SAMPLE_LINES,
    drop,
    free_port,
    scratch_schema,
    start_traced,
    wait_projected,
    worker_settings,
)

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARTIFACTS = ROOT / ".state" / "test-artifacts" / "dashboard"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


def recent_lines(n: int) -> list[bytes]:
    """Generated events of the last hour, so the dashboard's windows ending now hold data."""
    start_us = time.time_ns() // 1000 - 3_600_000_000
    return list(corpus.generate(n, seed=21, accounts=400, start_time_us=start_us, rate_per_s=n / 3_500))


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def page(driver: webdriver.Chrome, base: str, route: str, name: str, timeout: float = 30) -> None:
    driver.get(f"{base}/#/{route}")
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, "main").get_attribute("data-page") == name)


def texts(driver: webdriver.Chrome, css: str) -> list[str]:
    """The text of every element matching ``css``, read at once: the page re-renders every few
    seconds, so elements found earlier may be gone."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)


def errors(driver: webdriver.Chrome) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


async def test_every_page_renders_live_data_and_a_candidate_leads_to_its_traced_journey(
        unique: str, tmp_path: Path, browser: webdriver.Chrome) -> None:
    schema = f"dash_{unique}"
    lines = SAMPLE_LINES + recent_lines(1500)
    async with JetstreamServer(lines) as server:
        settings = worker_settings(unique, tmp_path, db_schema=schema).model_copy(
            update={"jetstream_endpoint": [server.url], "api_port": free_port(), "crawl_schema": f"crawl_{unique}"})
        await scratch_schema(settings, schema)
        strategies = str(ROOT / "streams" / "data" / "demo-strategies.json")
        ingest = start_traced(["ingest"], settings, str(tmp_path / "ingest.log"), OTEL_SERVICE_NAME=f"bge-ingest-{unique}")
        worker = start_traced(["worker", "-l", "warn"], settings, str(tmp_path / "worker.log"),
                              OTEL_SERVICE_NAME=f"bge-worker-{unique}", BGE_STRATEGIES_FILE=strategies,
                              API_CORS_ORIGINS="http://allowed.example:8080")
        try:
            await wait_projected(settings, schema, 180)
            started = io.StringIO()
            assert await crawl_cli.run(["snowball", "--seed", "alice.test", "--label", "dash"], settings=settings,
                                       out=started) == 0
            base = f"http://127.0.0.1:{settings.api_port}"
            async with aiohttp.ClientSession() as http:  # the API answers browsers of the configured origins only
                for origin, allowed in (("http://allowed.example:8080", "http://allowed.example:8080"),
                                        ("http://other.example", None)):
                    async with http.get(f"{base}/api/trending", headers={"Origin": origin}) as response:
                        assert response.headers.get("Access-Control-Allow-Origin") == allowed
                async with http.get(f"{base}/dashboard/app.js") as response:
                    assert response.status == 200 and "text/javascript" in response.headers["Content-Type"]

            page(browser, base, "overview", "overview")
            WebDriverWait(browser, 20).until(lambda d: texts(d, "svg.chart path.series"))
            totals = dict(browser.execute_script(
                "return [...document.querySelectorAll('.stat')].map(e => [e.querySelector('span').textContent, "
                "e.querySelector('b').textContent])"))
            assert totals["users"] != "0" and totals["posts"] != "0", totals
            assert texts(browser, "section[aria-label='Pipeline health'] tbody tr")
            label = browser.execute_script("const c = document.querySelector('svg.chart'); "
                                           "return c.getAttribute('role') + ' ' + c.getAttribute('aria-label')")
            assert label.startswith("img ") and "per minute" in label, label
            shot(browser, "overview")

            page(browser, base, "growth", "growth")
            for title in ("Trending accounts (24 h)", "Engagement leaders", "Top posts (24 h)", "Trending hashtags (24 h)"):
                assert texts(browser, f"section[aria-label='{title}'] tbody tr"), f"{title} is empty"
            assert browser.execute_script("return document.querySelectorAll('svg.chart rect.bar').length") > 0
            shot(browser, "growth")

            page(browser, base, "crawls", "crawls")
            assert any("snowball" in row for row in texts(browser, "tbody tr"))
            shot(browser, "crawls")

            page(browser, base, "candidates", "candidates")
            WebDriverWait(browser, 20).until(lambda d: texts(d, "a.journey"))
            assert texts(browser, "#strategy option")
            shot(browser, "candidates")
            account = browser.execute_script("return document.querySelector('main tbody tr td a').href")
            browser.execute_script("document.querySelector('a.journey').click()")  # from a candidate to its event
            WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "main").get_attribute("data-page") == "journey")
            WebDriverWait(browser, 30).until(lambda d: texts(d, "li.trace-span"))
            spans = texts(browser, "li.trace-span")
            assert any("collect jetstream.event" in s for s in spans) and any("ingest jetstream.frame" in s for s in spans), spans
            assert any("bge replay raw" in t for t in texts(browser, "section[aria-label='Reproduce it']"))
            decisions = texts(browser, "section[aria-label=\"Each strategy's decision\"] tbody tr")
            assert any("candidate" in row for row in decisions), decisions
            shot(browser, "journey")

            browser.get(account)
            WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "main").get_attribute("data-page") == "account")
            assert texts(browser, "section[aria-label='Follower gains'] svg.chart")
            assert texts(browser, "section[aria-label='Why it is a candidate'] tbody tr")
            shot(browser, "account")

            browser.set_window_size(390, 844)  # a phone
            page(browser, base, "growth", "growth")
            wide = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 1, f"the page is {wide}px wider than a phone's screen"
            shot(browser, "growth-phone")
            assert errors(browser) == []
        finally:
            kill(ingest, subprocess.signal.SIGTERM)
            kill(worker, subprocess.signal.SIGTERM)
            await drop(settings, schema, f"crawl_{unique}")
