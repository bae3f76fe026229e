"""The postmortem review pages of a real `runbook serve`, driven through Debian's headless Chromium
with Selenium (/usr/bin/chromium and /usr/bin/chromedriver; nothing is downloaded): list (with its
target and incident columns), filter with the page's form, render a draft (its curated timeline, the
full record folded, an incident's runs named on each line), write its TO WRITE sections where they
stand and any number of action items, see each save confirmed where it was made, mark it reviewed,
and find all of it in the Markdown file.

The browser stands where an authenticating proxy would: serve trusts 127.0.0.1 as its proxy, and
Chromium sends the proxy's identity header on every request (DevTools' setExtraHTTPHeaders).
The committed screenshots (docs/review-*.png) are refreshed by hand from the ones these tests take
into their temporary directory, never by the tests."""
from __future__ import annotations

import datetime as dt
import os
import re
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

REPLAY_BODY = """# Postmortem (draft): kafka-replay on primary/billing, 2026-11-27, succeeded

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

DRAIN_BODY = """# Postmortem (draft): rabbitmq-drain-stuck on primary//orders, 2026-11-27, failed

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
    """The list's (id, runbook, status) rows."""
    return [(row["postmortem"], row["runbook"], row["status"]) for row in list_rows(driver)]


def list_rows(driver) -> list[dict[str, str]]:
    """The list's rows, each cell by its column's name."""
    table = driver.find_element(By.ID, "postmortems")
    names = [th.text for th in table.find_elements(By.TAG_NAME, "th")]
    return [dict(zip(names, (td.text for td in row.find_elements(By.TAG_NAME, "td"))))
            for row in table.find_elements(By.TAG_NAME, "tr")[1:]]


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
    replay, _ = save_draft(directory, "kafka-replay", str(uuid.uuid4()), "succeeded", REPLAY_BODY, now=created,
                           targets=["primary/billing"])
    drain, _ = save_draft(directory, "rabbitmq-drain-stuck", str(uuid.uuid4()), "failed", DRAIN_BODY,
                          now=created + dt.timedelta(minutes=5), targets=["primary//orders"])
    return replay, drain


def test_the_list_shows_every_draft_and_its_form_filters_by_runbook_and_status(serve, browser, drafts):
    replay, drain = drafts
    browser.get(f"{serve.url}/postmortems")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Postmortems"
    assert listed(browser) == [(drain.id, "rabbitmq-drain-stuck", "draft"), (replay.id, "kafka-replay", "draft")]
    assert [(row["target"], row["incident"]) for row in list_rows(browser)] == [
        ("primary//orders", ""), ("primary/billing", "")]
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
    assert browser.title == f"Postmortem (draft): kafka-replay on primary/billing, 2026-11-27, succeeded · {replay.id}"
    assert browser.find_element(By.ID, "status").text == "draft"
    assert browser.find_element(By.ID, "targets").text == "primary/billing"
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#postmortem h2")]
    assert headings == ["Summary", "Impact", "Root cause (TO WRITE)", "Action items (TO WRITE)"]
    contents = browser.find_element(By.ID, "contents").text.splitlines()
    assert contents == ["Summary", "Impact", "Root cause to write", "Action items to write"], contents
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
    browser.find_element(By.CSS_SELECTOR, "#review-form textarea[name=note]").send_keys("numbers checked against the plan")
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#review-form button[type=submit]").click())
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "reviewed"))
    assert browser.current_url == f"{serve.url}/postmortems/{replay.id}?saved=review#review"
    reviewers = browser.find_element(By.ID, "reviewers").text
    assert browser.find_element(By.CSS_SELECTOR, "#postmortem h1").text.startswith("Postmortem: kafka-replay")

    meta = front_matter(replay.path)
    assert meta["status"] == "reviewed" and meta["id"] == replay.id and meta["created"] == "2026-11-27T06:00:00Z"
    [review] = meta["reviewers"]
    assert review["name"] == "dana" and review["note"] == "numbers checked against the plan"
    assert review["proof"] == {"kind": "proxy-header", "header": "X-Forwarded-Email", "value": "Dana@example.com",
                               "proxy": "127.0.0.1"}
    reviewed_at = dt.datetime.strptime(review["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert before <= reviewed_at <= dt.datetime.now(dt.timezone.utc)
    assert reviewers == f"dana at {review['at']}: numbers checked against the plan"
    saved = browser.find_element(By.CSS_SELECTOR, "#review #saved")
    assert saved.text == f"Saved by dana at {review['at']}; the file is up to date.", saved.text
    assert in_view(browser, saved), "the confirmation is where the reader is"
    reviewed_body = REPLAY_BODY.replace("# Postmortem (draft):", "# Postmortem:", 1)
    assert replay.path.read_text(encoding="utf-8").endswith(reviewed_body)
    assert front_matter(drain.path)["status"] == "draft"

    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, "All postmortems").click())
    assert browser.title == "Postmortems"
    assert listed(browser) == [(drain.id, "rabbitmq-drain-stuck", "draft"), (replay.id, "kafka-replay", "reviewed")]
    assert filter_list(browser, "all", "draft") == [(drain.id, "rabbitmq-drain-stuck", "draft")]
    assert filter_list(browser, "all", "reviewed") == [(replay.id, "kafka-replay", "reviewed")]


def in_view(driver, element) -> bool:
    """Whether `element` is inside the window as it is scrolled now."""
    return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return r.top >= 0 && r.bottom <= window.innerHeight;", element)


def section_of(driver, title: str):
    """The page's <section> whose heading is `title` (with or without "(TO WRITE)")."""
    return next(s for s in driver.find_elements(By.CSS_SELECTOR, "#postmortem section")
                if s.find_elements(By.TAG_NAME, "h2") and
                s.find_element(By.TAG_NAME, "h2").text.removesuffix(" (TO WRITE)") == title)


def test_the_team_writes_each_section_where_it_stands_and_any_number_of_action_items(serve, browser, drafts,
                                                                                     tmp_path):
    replay, _ = drafts
    browser.set_window_size(1100, 700)
    browser.get(f"{serve.url}/postmortems/{replay.id}")
    cause = section_of(browser, "Root cause").find_element(By.TAG_NAME, "textarea")  # open: still to write
    assert cause.get_attribute("name") == "section:Root cause" and cause.get_attribute("value") == ""
    cause.send_keys("A deploy skipped the schema check;\nthe consumer failed every record.")
    navigate(browser, lambda: section_of(browser, "Root cause").find_element(By.TAG_NAME, "button").click())

    assert browser.current_url == f"{serve.url}/postmortems/{replay.id}?saved=s-root-cause#s-root-cause"
    root = section_of(browser, "Root cause")
    assert root.get_attribute("id") == "s-root-cause"
    saved = root.find_element(By.ID, "saved")
    assert re.fullmatch(r"Saved by dana at 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ; the file is up to date\.", saved.text)
    assert in_view(browser, saved), "the confirmation is where the reader is"
    assert "A deploy skipped the schema check;" in root.text
    # Written, the section's form folds behind "Edit", holding what was saved.
    edit = root.find_element(By.CSS_SELECTOR, "details.edit")
    assert edit.get_attribute("open") is None and edit.find_element(By.TAG_NAME, "summary").text == "Edit Root cause"
    assert root.find_element(By.TAG_NAME, "textarea").get_attribute("value") == (
        "A deploy skipped the schema check;\nthe consumer failed every record.")
    assert len(browser.find_elements(By.ID, "saved")) == 1

    wanted = [("Add the schema check to CI", "carol", "2026-12-15", "https://tracker.example/OPS-12"),
              ("Alert on a consumer failing every record", "dana", "", ""),
              ("Page the owning team, not only on call", "erin", "2027-01-10", "")]

    def fill(row: int, item: tuple[str, str, str, str]) -> None:
        for name, value in zip(("action", "owner", "due", "link"), item):
            field = browser.find_element(By.NAME, f"{name}-{row}")
            if name == "due":  # a date input takes a date as typed in its locale's order: set it as submitted
                browser.execute_script("arguments[0].value = arguments[1]", field, value)
            elif value:
                field.send_keys(value)

    def blank_rows() -> int:
        return sum(1 for row in browser.find_elements(By.CSS_SELECTOR, "#items-form tr")[1:]
                   if not row.find_element(By.CSS_SELECTOR, "input[name^=action-]").get_attribute("value"))

    assert blank_rows() == 1
    fill(0, wanted[0])
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#items-form button[name=add]").click())
    assert browser.current_url.endswith("?saved=s-action-items&rows=2#s-action-items")
    assert blank_rows() == 2, "Save and add a row gives one more blank row"
    assert in_view(browser, section_of(browser, "Action items").find_element(By.ID, "saved"))
    fill(1, wanted[1])
    fill(2, wanted[2])
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#items-form button[type=submit]").click())
    assert blank_rows() == 1
    assert front_matter(replay.path)["action_items"] == [dict(zip(("action", "owner", "due", "link"), item))
                                                         for item in wanted]
    browser.save_screenshot(str(tmp_path / "review-page.png"))

    browser.find_element(By.NAME, "remove-1").click()
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#items-form button[type=submit]").click())
    meta = front_matter(replay.path)
    assert [item["action"] for item in meta["action_items"]] == [wanted[0][0], wanted[2][0]]
    assert meta["status"] == "draft" and meta["written"] == ["Action items", "Root cause"]
    assert meta["sections"] == {"Root cause": "A deploy skipped the schema check;\nthe consumer failed every record."}
    assert meta["edits"][0]["name"] == "dana" and meta["edits"][0]["proof"]["proxy"] == "127.0.0.1"
    assert len(meta["edits"]) == 4
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#postmortem h2")]
    assert headings == ["Summary", "Impact", "Root cause", "Action items"]
    text = replay.path.read_text(encoding="utf-8")
    assert "## Root cause\n\nA deploy skipped the schema check;\nthe consumer failed every record.\n" in text
    assert ("| Add the schema check to CI | carol | 2026-12-15 | <https://tracker.example/OPS-12> |\n"
            "| Page the owning team, not only on call | erin | 2027-01-10 |  |\n") in text
    assert "## Impact\n" in text and "_TO WRITE_" not in text


def test_the_timeline_reads_as_an_incident_and_the_full_record_is_folded(serve, browser, tmp_path):
    """An incident's draft of two runs (rendered from their records as a run renders it): its title
    names the targets, its timeline holds what people read, each line naming its run(s), and
    Prefect's state changes are in the full record, folded until asked for."""
    from mq_runbooks.base.settings import Settings
    from mq_runbooks.kit.postmortem.context import build_context, scrubber_for
    from mq_runbooks.kit.postmortem.incident import incident_context
    from mq_runbooks.kit.postmortem.render import render
    from tests.kit.test_postmortem import approved_run

    settings = Settings.from_environ({"RUNBOOK_POSTMORTEM_DIR": str(tmp_path), "PREFECT_API_URL": "http://x/api"})
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    contexts = [build_context(records, scrubber_for(settings), settings)
                for records in (approved_run(first), approved_run(second, consumergroup="payments"))]
    directory = Path(serve.env["RUNBOOK_POSTMORTEM_DIR"])
    incident = uuid.uuid4().hex
    draft, _ = save_draft(directory, "kafka-replay", first, "succeeded", render(incident_context(contexts), None,
                                                                                  "incident.md.j2"),
                          incident=incident, runs=[first, second], targets=["primary/billing", "primary/payments"],
                          alertnames=["KafkaConsumerGroupStuck"])

    browser.set_window_size(1100, 900)
    browser.get(f"{serve.url}/postmortems")
    [row] = [r for r in list_rows(browser) if r["postmortem"] == draft.id]
    assert row["target"] == "primary/billing, primary/payments"
    assert row["incident"] == f"KafkaConsumerGroupStuck ({incident[:8]}, 2 runs)"
    browser.save_screenshot(str(tmp_path / "review-list.png"))
    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, draft.id).click())
    browser.save_screenshot(str(tmp_path / "review-page-top.png"))
    assert browser.find_element(By.CSS_SELECTOR, "#postmortem h1").text == (
        "Postmortem (draft): incident KafkaConsumerGroupStuck on primary/billing, primary/payments, 2026-11-27, "
        "succeeded")
    timeline = section_of(browser, "Timeline (UTC)")
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in timeline.find_elements(By.TAG_NAME, "tr")[1:]]
    a, b = f"{first.replace('-', '')[:8]}", f"{second.replace('-', '')[:8]}"
    assert len(rows) == 19, rows  # per run: fired, start, plan, asked, approved, snapshot, change, verify, outcome; one resolve
    assert not [r for r in rows if r[2].startswith("Prefect")], "Prefect's state changes are folded away"
    assert [(r[1], r[3]) for r in rows if "fired" in r[3]] == [
        (a, "alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup=billing)"),
        (b, "alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup=payments)")]
    assert [r[1] for r in rows if "resolved" in r[3]] == [f"{a}, {b}"]
    kinds = [r[3].split(":")[0] for r in rows if r[1] == a and r[2] == "journal"]
    assert kinds == ["parameters", "plan", "approval_requested", "approval", "snapshot", "action", "verification",
                     "outcome"], kinds
    stamps = [r[0] for r in rows]
    assert stamps == sorted(stamps)
    browser.execute_script("arguments[0].scrollIntoView()", timeline)
    browser.save_screenshot(str(tmp_path / "review-page-timeline.png"))

    record = section_of_folded(browser, "Full record (UTC)")
    assert record.get_attribute("open") is None
    assert "state Suspended" not in record.text, "folded: its lines are not shown"
    record.find_element(By.TAG_NAME, "summary").click()
    WebDriverWait(browser, 5).until(lambda d: "state Suspended" in record.text)
    assert "alter-offsets Completed" in record.text and "WARNING slow answer from Slack" in record.text


def section_of_folded(driver, title: str):
    return next(d for d in driver.find_elements(By.CSS_SELECTOR, "#postmortem details.folded")
                if d.find_element(By.TAG_NAME, "summary").text == title)
