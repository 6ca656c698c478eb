"""The API docs page (/api/docs) in a real browser: headless Chromium loads it
from a running todo-app (the debug build, on a fresh database), every operation
of the OpenAPI document is listed, and "Try it out" with a token creates a todo
that the API then returns. The token stays in the page's memory, and the page
runs under its Content-Security-Policy without a violation."""

import dataclasses
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from suite_support import free_port

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def with_database(url: str, name: str) -> str:
    """`url` naming database `name`, its query (sslmode…) kept."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def database_url():
    """A fresh, empty database on TEST_DATABASE_URL's server, dropped afterwards."""
    name = f"todo_apidocs_{uuid.uuid4().hex}"
    subprocess.run(
        ["psql", TEST_DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'],
        check=True,
    )
    try:
        yield with_database(TEST_DATABASE_URL, name)
    finally:
        subprocess.run(
            ["psql", TEST_DATABASE_URL, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
        )


@dataclasses.dataclass
class Server:
    base: str
    token: str


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """The status and body of GET `url`; status 0 when nothing answers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except urllib.error.URLError:
        return 0, b""


@pytest.fixture
def server(binaries, repo_root, database_url, tmp_path):
    """`todo-app serve` on loopback with one API key; stopped whatever happens."""
    port, admin_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("APP_ENVIRONMENT", "RUST_LOG") and not key.startswith("OTEL_")
    }
    env.update(
        DATABASE_URL=database_url,
        APP_CONFIG_DIR=str(repo_root / "configuration"),
        APP__SERVER__HOST="127.0.0.1",
        APP__SERVER__PORT=str(port),
        APP__ADMIN__HOST="127.0.0.1",
        APP__ADMIN__PORT=str(admin_port),
        APP__SERVER__WORKERS="2",
        APP__SERVER__SHUTDOWN_READINESS_DELAY_SECONDS="0",
        LOG_LEVEL="warn",
    )
    log = (tmp_path / "todo-app.log").open("w")
    process = subprocess.Popen(
        [str(binaries / "todo-app"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while get(f"http://127.0.0.1:{admin_port}/health/ready")[0] != 200:
            assert process.poll() is None, (tmp_path / "todo-app.log").read_text()
            assert time.monotonic() < deadline, "todo-app did not become ready in 60 s"
            time.sleep(0.2)
        token = subprocess.run(
            [str(binaries / "todo-app"), "keys", "create", "--owner", "alice"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield Server(base=f"http://127.0.0.1:{port}", token=token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through its own chromedriver (no downloads)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_docs_page_lists_every_operation_and_try_it_out_creates_a_todo(server, browser, tmp_path):
    status, document = get(f"{server.base}/api/openapi.json")
    assert status == 200
    documented = {
        (method.upper(), path)
        for path, item in json.loads(document)["paths"].items()
        for method in item
    }
    title = f"from the docs page {uuid.uuid4().hex[:8]}"
    wait = WebDriverWait(browser, 30)

    try:
        browser.get(f"{server.base}/api/docs")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(documented))
        listed = {
            (
                block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
                block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
            )
            for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")
        }

        browser.find_element(By.CSS_SELECTOR, ".auth-wrapper button.authorize").click()
        field = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, ".modal-ux input")))
        field.send_keys(server.token)
        browser.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper button.authorize").click()
        browser.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()

        create = browser.find_element(By.ID, "operations-todos-create_todo")
        create.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(lambda d: create.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
        body = wait.until(lambda d: create.find_element(By.CSS_SELECTOR, "textarea.body-param__text"))
        body.send_keys(Keys.CONTROL, "a")
        body.send_keys(Keys.DELETE)
        body.send_keys(json.dumps({"title": title}))
        create.find_element(By.CSS_SELECTOR, "button.execute").click()
        answered = wait.until(
            lambda d: create.find_element(
                By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"
            ).text.strip()
        )
        stored = browser.execute_script(
            "return [window.localStorage.length, window.sessionStorage.length, document.cookie]"
        )
        messages = [entry["message"] for entry in browser.get_log("browser")]
    except Exception:
        browser.save_screenshot(str(tmp_path / "api-docs.png"))
        raise

    assert listed == documented and len(listed) == 5, f"listed {listed}"
    assert answered.startswith("201"), f"Try it out answered {answered!r}"
    status, page = get(f"{server.base}/api/todos", server.token)
    assert status == 200
    assert title in [todo["title"] for todo in json.loads(page)["items"]]
    assert stored == [0, 0, ""], "the token is kept in the page's memory only"
    violations = [m for m in messages if "Content Security Policy" in m or "Refused to" in m]
    assert violations == [], violations


def test_the_docs_page_is_served_with_a_strict_content_security_policy(server):
    request = urllib.request.Request(f"{server.base}/api/docs")
    with urllib.request.urlopen(request, timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        page = response.read().decode()

    directives = dict(
        (part.split(" ", 1) + [""])[:2] for part in (p.strip() for p in policy.split(";")) if part
    )
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    assert "http://" not in page and "https://" not in page, "nothing is loaded from elsewhere"
