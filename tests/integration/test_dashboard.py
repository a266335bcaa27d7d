"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven
by Selenium) against the real stack: the local Jetstream server → ``bge ingest`` → Kafka →
``bge worker`` (traced to Jaeger) → Postgres, with the bundled recording and generated events of
the last hour. Every page renders with data, the charts draw, a click from a candidate reaches its
event journey and shows its trace's spans, a record's at-uri typed in the Find box reaches the
journey of the event that carried it, the overview counts dead letters by reason, the pages fit
a phone's width, and nothing logs an error to the console. Screenshots are kept in ``.state/test-artifacts/dashboard/``."""

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
from selenium.webdriver.common.keys import Keys  # noqa: E402
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


async def record_journey_answers(http: aiohttp.ClientSession, base: str) -> str:
    """``/api/journey/record`` finds the raw event that carried a post by the post's at-uri, says
    where it searched when no event carries one, and refuses what is not a record at-uri. Returns
    the post's at-uri."""
    async with http.get(f"{base}/api/posts/top", params={"hours": "24", "limit": "1"}) as response:
        uri = (await response.json())["data"][0]["uri"]
    async with http.get(f"{base}/api/journey/record", params={"uri": uri}) as response:
        assert response.status == 200, await response.text()
        found = (await response.json())["data"]
    did, _, rkey = uri.removeprefix("at://").split("/")
    assert found["key"] == did and found["event"]["did"] == did
    assert found["event"]["commit"]["rkey"] == rkey and found["event"]["commit"]["operation"] == "create"
    assert [row["uri"] for row in found["rows"]["posts"]] == [uri]
    async with http.get(f"{base}/api/journey", params={key: str(found[key]) for key in ("topic", "partition", "offset")}) as response:
        assert (await response.json())["data"]["event"] == found["event"]
    async with http.get(f"{base}/api/journey/record", params={"uri": uri[: -len(rkey)] + "3zzzzzzzzzzzz"}) as response:
        body = await response.json()
        assert response.status == 404 and f"partition {found['partition']}" in body["error"]["details"]["searched"], body
    async with http.get(f"{base}/api/journey/record", params={"uri": "at://bsky.app/app.bsky.feed.post/3k"}) as response:
        assert response.status == 400 and (await response.json())["error"]["details"]["parameter"] == "uri"
    return uri


async def dead_letters_by_reason(http: aiohttp.ClientSession, base: str) -> None:
    """``/api/dead-letters`` counts the ingest's two dead-lettered frames by topic and reason."""
    async with http.get(f"{base}/api/dead-letters", params={"minutes": "60"}) as response:
        assert response.status == 200, await response.text()
        dead = (await response.json())["data"]
    frames = {d["reason"]: d["count"] for d in dead["by_reason"] if d["topic"].endswith("jetstream.dlq")}
    assert frames == {"invalid_json": 1, "not_an_event": 1}, dead
    assert dead["total"] == dead["counted"] == sum(d["count"] for d in dead["by_reason"]), dead


def errors(driver: webdriver.Chrome) -> list[dict]:
    """The console's errors, but for Chromium's own network line about a 503 from ``/health``: that is
    ``/health``'s documented answer while a check is unhealthy (a busy machine's slow Kafka or Postgres
    answer), which the overview shows as such; the page itself logs nothing then."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and not (entry.get("source") == "network" and "/health - " in entry["message"]
                     and "status of 503" in entry["message"])]


async def test_every_page_renders_live_data_and_a_candidate_leads_to_its_traced_journey(
        unique: str, tmp_path: Path, browser: webdriver.Chrome) -> None:
    schema = f"dash_{unique}"
    lines = SAMPLE_LINES + recent_lines(1500)
    async with JetstreamServer(lines) as server:
        server.send_malformed()  # the ingest's first two frames become dead letters
        server.send_not_event()
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
                post_uri = await record_journey_answers(http, base)
                await dead_letters_by_reason(http, base)

            page(browser, base, "overview", "overview")
            WebDriverWait(browser, 20).until(lambda d: texts(d, "svg.chart path.series"))
            totals = dict(browser.execute_script(
                "return [...document.querySelectorAll('.stat')].map(e => [e.querySelector('span').textContent, "
                "e.querySelector('b').textContent])"))
            assert totals["users"] != "0" and totals["posts"] != "0", totals
            assert texts(browser, "section[aria-label='Pipeline health'] tbody tr")
            dead = texts(browser, "section[aria-label='Dead letters (last hour)'] tbody tr")
            assert any("invalid_json" in row for row in dead) and any("not_an_event" in row for row in dead), dead
            label = browser.execute_script("const c = document.querySelector('svg.chart'); "
                                           "return c.getAttribute('role') + ' ' + c.getAttribute('aria-label')")
            assert label.startswith("img ") and "per minute" in label, label
            shot(browser, "overview")

            page(browser, base, "growth", "growth")
            for title in ("Trending accounts (24 h)", "Engagement leaders", "Top posts (24 h)", "Trending hashtags (24 h)"):
                assert texts(browser, f"section[aria-label='{title}'] tbody tr"), f"{title} is empty"
            assert browser.execute_script("return document.querySelectorAll('svg.chart rect.bar').length") > 0
            assert texts(browser, "section[aria-label='Top posts (24 h)'] a.record")  # each leads to its journey
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

            find = browser.find_element(By.ID, "find")  # a record's at-uri leads to the event that carried it
            find.send_keys(post_uri, Keys.ENTER)
            WebDriverWait(browser, 30).until(lambda d: any(post_uri in t for t in texts(d, "main p.muted")))
            assert any(post_uri.rsplit("/", 1)[1] in t for t in texts(browser, "section[aria-label='The event'] pre"))
            assert texts(browser, "section[aria-label='Rows written'] pre")
            shot(browser, "record-journey")

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
