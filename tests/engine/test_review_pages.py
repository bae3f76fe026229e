"""The postmortem review pages of a real `runbook serve`, driven through Debian's headless Chromium
with Selenium (/usr/bin/chromium and /usr/bin/chromedriver; nothing is downloaded): list, filter with
the page's form, render a draft, mark it reviewed, and find the review in the Markdown file."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from mq_runbooks.kit.postmortem_store import save_draft
from tests.serve_harness import REPO, ServeProcess, serve_environment

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT = REPO / "bench" / "results" / "review-page.png"

REPLAY_BODY = """# Postmortem (draft): kafka-replay, 2026-11-27, succeeded

## Summary

- **Outcome:** **succeeded**: offsets of billing reset: 300 message(s) to replay, 0 skipped

## Impact

| measure | value | source |
|---|---|---|
| messages replayed | 300 | plan, outcome |
| messages skipped | 0 | plan, outcome |

<script>document.title = 'injected'</script>

## Root cause (TO WRITE)

_TO WRITE_
"""

DRAIN_BODY = """# Postmortem (draft): rabbitmq-drain-stuck, 2026-11-27, failed

## Summary

- **Outcome:** **failed**: the backlog shovel did not start
"""


def _install_chromium() -> str:
    """'' once Debian's chromium and chromium-driver are there (installed now if they can be), else why not."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Debian's chromium and chromium-driver are missing and apt-get cannot install them here (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"cannot install chromium: {' '.join(command)} failed: {done.stderr.strip()[-500:]}"
    return "" if CHROMIUM.exists() and CHROMEDRIVER.exists() else "apt-get installed no /usr/bin/chromium{,driver}"


@pytest.fixture(scope="module")
def serve(tmp_path_factory, clusters):
    workdir = tmp_path_factory.mktemp("review-serve")
    process = ServeProcess(workdir, serve_environment(workdir, runbooks=("kafka-replay", "rabbitmq-drain-stuck")),
                           runner=False)
    yield process
    process.stop()


@pytest.fixture
def browser(tmp_path):
    reason = _install_chromium()
    if reason:
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1100,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def filter_list(driver, runbook: str, status: str) -> list[tuple[str, str, str]]:
    """Choose runbook and status ('all' for no filter) in the list page's form, submit it, and return
    the listed (id, runbook, status) rows."""
    Select(driver.find_element(By.NAME, "runbook")).select_by_visible_text(runbook)
    Select(driver.find_element(By.NAME, "status")).select_by_visible_text(status)
    old = driver.find_element(By.TAG_NAME, "table")
    driver.find_element(By.CSS_SELECTOR, "form button").click()
    WebDriverWait(driver, 10).until(ec.staleness_of(old))
    assert driver.title == "Postmortems", f"{driver.current_url}: {driver.find_element(By.TAG_NAME, 'body').text}"
    return listed(driver)


def listed(driver) -> list[tuple[str, str, str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "table tr")[1:]
    return [tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:3]) for row in rows]


def front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


@pytest.fixture
def drafts(serve):
    """Two drafts of different runbooks in the serve's (otherwise emptied) postmortem directory:
    (kafka-replay's, rabbitmq-drain-stuck's), the second created five minutes later."""
    directory = Path(serve.env["RUNBOOK_POSTMORTEM_DIR"])
    for old in directory.glob("*.md"):
        old.unlink()
    created = dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.timezone.utc)
    replay, _ = save_draft(directory, "kafka-replay", str(uuid.uuid4()), "succeeded", REPLAY_BODY, now=created)
    drain, _ = save_draft(directory, "rabbitmq-drain-stuck", str(uuid.uuid4()), "failed", DRAIN_BODY,
                          now=created + dt.timedelta(minutes=5))
    return replay, drain


def test_the_list_shows_every_draft_and_its_form_filters_by_runbook_and_status(serve, browser, drafts):
    replay, drain = drafts
    browser.get(f"{serve.url}/postmortems")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Postmortems"
    assert listed(browser) == [(drain.id, "rabbitmq-drain-stuck", "draft"), (replay.id, "kafka-replay", "draft")]
    assert filter_list(browser, "rabbitmq-drain-stuck", "draft") == [(drain.id, "rabbitmq-drain-stuck", "draft")]
    assert filter_list(browser, "all", "reviewed") == []
    assert "No postmortems match." in browser.page_source
    # "all" statuses is the form's empty choice: the page must take it as no filter.
    assert filter_list(browser, "kafka-replay", "all") == [(replay.id, "kafka-replay", "draft")]
    assert "runbook=kafka-replay" in browser.current_url


def test_a_draft_renders_and_the_review_form_marks_it_reviewed_in_its_file(serve, browser, drafts, tmp_path):
    replay, drain = drafts
    browser.get(f"{serve.url}/postmortems")
    browser.find_element(By.LINK_TEXT, replay.id).click()
    WebDriverWait(browser, 10).until(ec.title_is(replay.id))
    assert browser.find_element(By.ID, "status").text == "draft"
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings == ["Summary", "Impact", "Root cause (TO WRITE)"]
    impact = browser.find_element(By.XPATH, "//h2[.='Impact']/following-sibling::table[1]")
    assert [th.text for th in impact.find_elements(By.TAG_NAME, "th")] == ["measure", "value", "source"]
    assert [td.text for td in impact.find_elements(By.TAG_NAME, "td")][:3] == ["messages replayed", "300", "plan, outcome"]
    # Raw HTML in a draft is shown as text, never run (the title above would have changed).
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert "<script>document.title = 'injected'</script>" in browser.find_element(By.TAG_NAME, "body").text

    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    form = browser.find_element(By.ID, "review")
    form.find_element(By.NAME, "reviewer").send_keys("dana")
    form.find_element(By.NAME, "note").send_keys("numbers checked against the plan")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "reviewed"))
    assert browser.current_url == f"{serve.url}/postmortems/{replay.id}"
    reviewers = browser.find_element(By.ID, "reviewers").text

    browser.save_screenshot(str(tmp_path / "review-page.png"))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / "review-page.png", SCREENSHOT)
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")

    meta = front_matter(replay.path)
    assert meta["status"] == "reviewed" and meta["id"] == replay.id and meta["created"] == "2026-11-27T06:00:00Z"
    [review] = meta["reviewers"]
    assert review["name"] == "dana" and review["note"] == "numbers checked against the plan"
    reviewed_at = dt.datetime.strptime(review["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert before <= reviewed_at <= dt.datetime.now(dt.timezone.utc)
    assert reviewers == f"dana at {review['at']}: numbers checked against the plan"
    assert replay.path.read_text(encoding="utf-8").endswith(REPLAY_BODY)
    assert front_matter(drain.path)["status"] == "draft"

    browser.find_element(By.LINK_TEXT, "All postmortems").click()
    WebDriverWait(browser, 10).until(ec.title_is("Postmortems"))
    assert listed(browser) == [(drain.id, "rabbitmq-drain-stuck", "draft"), (replay.id, "kafka-replay", "reviewed")]
    assert filter_list(browser, "all", "draft") == [(drain.id, "rabbitmq-drain-stuck", "draft")]
    assert filter_list(browser, "all", "reviewed") == [(replay.id, "kafka-replay", "reviewed")]
