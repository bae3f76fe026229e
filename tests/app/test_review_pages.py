"""The postmortem review pages of a real `runbook serve`, driven through Debian's headless Chromium
with Selenium (/usr/bin/chromium and /usr/bin/chromedriver; nothing is downloaded): list, filter with
the page's form, render a draft, write its TO WRITE sections and action items, mark it reviewed, and
find all of it in the Markdown file.

The browser stands where an authenticating proxy would: serve trusts 127.0.0.1 as its proxy, and
Chromium sends the proxy's identity header on every request (DevTools' setExtraHTTPHeaders).
The committed screenshot (docs/review-page.png) is refreshed by hand, never by this test."""
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
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from mq_runbooks.kit.postmortem.store import save_draft
from tests.serve_harness import REPO, ServeProcess, serve_environment

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


IDENTITY = {"X-Forwarded-Email": "Dana@example.com", "X-Forwarded-User": "dana"}

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

_TO WRITE: what conditions let this happen._

## Action items (TO WRITE)

| action | owner | due | ticket |
|---|---|---|---|
| _TO WRITE_ | | | |
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
    env = serve_environment(workdir, runbooks=("kafka-replay", "rabbitmq-drain-stuck"))
    (workdir / "teams.yaml").write_text("kafka-oncall: [carol, dana]\n")
    env.update({"RUNBOOK_TRUSTED_PROXIES": "127.0.0.1", "RUNBOOK_TEAMS": str(workdir / "teams.yaml")})
    process = ServeProcess(workdir, env, runner=False)
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
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": IDENTITY})
    yield driver
    driver.quit()


def filter_list(driver, runbook: str, status: str) -> list[tuple[str, str, str]]:
    """Choose runbook and status ('all' for no filter) in the list page's form, submit it, and return
    the listed (id, runbook, status) rows."""
    Select(driver.find_element(By.NAME, "runbook")).select_by_visible_text(runbook)
    Select(driver.find_element(By.NAME, "status")).select_by_visible_text(status)
    navigate(driver, lambda: driver.find_element(By.CSS_SELECTOR, "form button").click())
    assert driver.title == "Postmortems", f"{driver.current_url}: {driver.find_element(By.TAG_NAME, 'body').text}"
    return listed(driver)


def navigate(driver, action) -> None:
    """Do what leaves the page (a click, a submit) and wait until the next page has loaded: elements
    of the old page must not be used after this (they belong to no document any more)."""
    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 15).until(lambda d: left(old))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def left(element) -> bool:
    """Whether the page `element` belongs to has been replaced. Selenium's staleness_of knows only the
    stale-element error; chromedriver answers "does not belong to the document" instead when the
    navigation lands during the very check (seen once in CI)."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


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
    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, replay.id).click())
    assert browser.title == replay.id
    assert browser.find_element(By.ID, "status").text == "draft"
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#postmortem h2")]
    assert headings == ["Summary", "Impact", "Root cause (TO WRITE)", "Action items (TO WRITE)"]
    assert "You are dana (X-Forwarded-Email: Dana@example.com, via 127.0.0.1)." in browser.find_element(By.ID, "who").text
    prefect = serve.env.get("PREFECT_API_URL", "http://127.0.0.1:4200/api").removesuffix("/api")
    assert browser.find_element(By.ID, "prefect-run").get_attribute("href") == f"{prefect}/runs/flow-run/{replay.run_id}"
    assert "8080" not in browser.page_source and browser.find_elements(By.ID, "permalink") == []
    impact = browser.find_element(By.XPATH, "//h2[.='Impact']/following-sibling::table[1]")
    assert [th.text for th in impact.find_elements(By.TAG_NAME, "th")] == ["measure", "value", "source"]
    assert [td.text for td in impact.find_elements(By.TAG_NAME, "td")][:3] == ["messages replayed", "300", "plan, outcome"]
    # Raw HTML in a draft is shown as text, never run (the title above would have changed).
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert "<script>document.title = 'injected'</script>" in browser.find_element(By.TAG_NAME, "body").text

    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    browser.find_element(By.CSS_SELECTOR, "#review textarea[name=note]").send_keys("numbers checked against the plan")
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#review button[type=submit]").click())
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "reviewed"))
    assert browser.current_url == f"{serve.url}/postmortems/{replay.id}"
    reviewers = browser.find_element(By.ID, "reviewers").text
    assert browser.find_element(By.CSS_SELECTOR, "#postmortem h1").text.startswith("Postmortem: kafka-replay")

    browser.save_screenshot(str(tmp_path / "review-page.png"))
    assert (tmp_path / "review-page.png").read_bytes().startswith(b"\x89PNG")

    meta = front_matter(replay.path)
    assert meta["status"] == "reviewed" and meta["id"] == replay.id and meta["created"] == "2026-11-27T06:00:00Z"
    [review] = meta["reviewers"]
    assert review["name"] == "dana" and review["note"] == "numbers checked against the plan"
    assert review["proof"] == {"kind": "proxy-header", "header": "X-Forwarded-Email", "value": "Dana@example.com",
                               "proxy": "127.0.0.1"}
    reviewed_at = dt.datetime.strptime(review["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert before <= reviewed_at <= dt.datetime.now(dt.timezone.utc)
    assert reviewers == f"dana at {review['at']}: numbers checked against the plan"
    reviewed_body = REPLAY_BODY.replace("# Postmortem (draft):", "# Postmortem:", 1)
    assert replay.path.read_text(encoding="utf-8").endswith(reviewed_body)
    assert front_matter(drain.path)["status"] == "draft"

    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, "All postmortems").click())
    assert browser.title == "Postmortems"
    assert listed(browser) == [(drain.id, "rabbitmq-drain-stuck", "draft"), (replay.id, "kafka-replay", "reviewed")]
    assert filter_list(browser, "all", "draft") == [(drain.id, "rabbitmq-drain-stuck", "draft")]
    assert filter_list(browser, "all", "reviewed") == [(replay.id, "kafka-replay", "reviewed")]


def test_the_team_writes_the_postmortem_in_the_page_and_it_lands_in_the_file(serve, browser, drafts):
    replay, _ = drafts
    browser.get(f"{serve.url}/postmortems/{replay.id}")
    cause = browser.find_element(By.NAME, "section:Root cause")
    assert cause.get_attribute("value") == ""  # the placeholder is not text to keep
    cause.send_keys("A deploy skipped the schema check;\nthe consumer failed every record.")
    browser.find_element(By.NAME, "action-0").send_keys("Add the schema check to CI")
    browser.find_element(By.NAME, "owner-0").send_keys("carol")
    # A date input takes the date as typed in its locale's order; set it as the form submits it.
    browser.execute_script("arguments[0].value = '2026-12-15'", browser.find_element(By.NAME, "due-0"))
    browser.find_element(By.NAME, "link-0").send_keys("https://tracker.example/OPS-12")
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#edit button[type=submit]").click())

    assert browser.current_url == f"{serve.url}/postmortems/{replay.id}"
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#postmortem h2")]
    assert headings == ["Summary", "Impact", "Root cause", "Action items"]
    actions = browser.find_element(By.XPATH, "//h2[.='Action items']/following-sibling::table[1]")
    assert [td.text for td in actions.find_elements(By.TAG_NAME, "td")] == [
        "Add the schema check to CI", "carol", "2026-12-15", "https://tracker.example/OPS-12"]
    assert "A deploy skipped the schema check;" in browser.find_element(By.ID, "postmortem").text
    # The form shows what was saved, ready for the next edit.
    assert browser.find_element(By.NAME, "section:Root cause").get_attribute("value") == (
        "A deploy skipped the schema check;\nthe consumer failed every record.")
    assert browser.find_element(By.NAME, "owner-0").get_attribute("value") == "carol"

    meta = front_matter(replay.path)
    assert meta["status"] == "draft" and meta["written"] == ["Action items", "Root cause"]
    assert meta["action_items"] == [{"action": "Add the schema check to CI", "owner": "carol", "due": "2026-12-15",
                                     "link": "https://tracker.example/OPS-12"}]
    assert meta["edits"][0]["name"] == "dana" and meta["edits"][0]["proof"]["proxy"] == "127.0.0.1"
    text = replay.path.read_text(encoding="utf-8")
    assert "## Root cause\n\nA deploy skipped the schema check;\nthe consumer failed every record.\n" in text
    assert "## Impact\n" in text and "_TO WRITE_" not in text
