"""The web console in a real browser: a daemon serving two APIs, its overview and an API's page.

One daemon (the process backend: the console does not depend on the backend, and process
replicas start in seconds) serves `echo` (autoscaled from 1 replica on in-flight requests) and
`quiet`. The page must show both live, send a prediction with try-it and show the answer,
show `echo`'s requests/s rise under load with the scale-up marked, show a predictor's print in
the logs panel, and put what a predictor prints or answers into the page as text: a payload of
HTML and script must not become an element nor run. Each page's screenshot is kept.
"""

from __future__ import annotations

import re

from tests.builders import write_project
from tests.console_fakes import FakeConsole
from tests.load import KeepAliveClients
from tests.real_daemon import free_port
from tests.unit.snapshots import BATCH

PREDICTOR = """\
class PythonPredictor:
    def __init__(self, config):
        print("<script>window.pwned = 'log'</script> loaded", flush=True)

    def predict(self, payload: dict, query_params) -> dict:
        import time
        time.sleep(0.02)
        return {"echo": payload, "html": "<img src=x onerror=\\"window.pwned = 'answer'\\">"}
"""


def project_yaml(port: int) -> str:
    # echo scales on in-flight requests at once (no upscale stabilization, a short window), so
    # the load below marks a scale-up within seconds
    return f"""\
- name: echo
  kind: RealtimeAPI
  predictor: {{type: python, path: predictor.py}}
  networking: {{local_port: {port}}}
  autoscaling: {{min_replicas: 1, max_replicas: 3, target_replica_concurrency: 1, window: 10s,
                upscale_stabilization_period: 0s}}
- name: quiet
  kind: RealtimeAPI
  predictor: {{type: python, path: predictor.py}}
  networking: {{local_port: {port}}}
"""


def test_console_shows_apis_live_tries_one_and_escapes_what_predictors_say(cli, tmp_path, browser, artifacts):
    port, admin = free_port(), free_port()
    project = write_project(tmp_path / "proj", project_yaml(port), {"predictor.py": PREDICTOR})
    up = cli("up", "-d", "--backend", "process", "--metrics-port", str(admin), "--wait", "90", str(project))
    assert up.code == 0, (up, cli.daemon_log())
    assert f"web console: http://127.0.0.1:{admin}/" in up.out, up.out
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"http://127.0.0.1:{admin}/")
    for name in ("echo", "quiet"):
        row = page.locator(f"tr[data-api={name}]")
        row.wait_for()
        assert "live" in row.inner_text(), (row.inner_text(), cli("get").out, cli.daemon_log())
    page.screenshot(path=str(artifacts / "console-overview.png"), full_page=True)

    page.click("tr[data-api=echo] a")
    page.wait_for_selector("#chart-rps")
    assert page.inner_text("h1") == "echo"

    # try-it: a JSON body through the gateway; the answer's HTML stays text
    page.fill("#try-input", '{"text": "<script>window.pwned = \\"body\\"</script>"}')
    page.click("#try-send")
    page.wait_for_selector("#try-status")
    assert page.inner_text("#try-status") == "200"
    shown = page.inner_text("#try-body")
    assert "<img src=x" in shown and '"text": "<script>' in shown, shown
    assert page.locator("#try-answer img, #try-answer script").count() == 0

    # the predictor's print in the logs panel, as text
    page.wait_for_function("() => document.getElementById('log-lines').textContent.includes('loaded')")
    assert "<script>window.pwned = 'log'</script> loaded" in page.inner_text("#log-lines")
    assert page.locator("#log-lines script, #log-lines *").count() == 0

    # load on echo: its requests/s rises on the chart, and the scale-up is marked
    with KeepAliveClients(port, "/echo", n=4, payload={"x": 1}, limit=90):
        page.wait_for_function(
            "() => parseFloat(document.getElementById('now-rps').textContent) > 5", timeout=30_000)
        page.wait_for_selector("#marks li[data-kind=scale]", timeout=60_000)
    rps = float(re.match(r"[\d.]+", page.inner_text("#now-rps")).group())
    assert rps > 0, rps
    assert "scaling from 1 to" in page.inner_text("#marks li[data-kind=scale]")
    page.screenshot(path=str(artifacts / "console-api.png"), full_page=True)

    assert page.evaluate("() => window.pwned") is None, "a predictor's output ran as script"
    assert errors == [], errors


def test_the_overview_of_50_apis_loads_within_a_second(browser, artifacts):
    """The real console handlers in front of a fake daemon's snapshot of 50 APIs (50 real APIs
    would be 50 replicas on this machine): from the start of navigation to the overview drawn, as
    the page's own clock says (Playwright's waits poll, at up to 0.5 s steps)."""
    console = FakeConsole(50)
    console.sample()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(console.url + "/")
        page.locator("tr[data-api]").nth(49).wait_for()
        elapsed = page.evaluate("() => performance.getEntriesByName('cortexd:overview')[0].startTime") / 1000
        page.screenshot(path=str(artifacts / "console-overview-50.png"))
        assert page.locator("tr[data-api]").count() == 50
        assert elapsed < 1.0, f"the overview of 50 APIs took {elapsed:.2f}s"
    finally:
        console.close()


def test_the_overview_shows_batch_apis_and_each_shown_jobs_progress(browser, artifacts):
    """A BatchAPI's row, then a row per job the snapshot shows: its status and a progress bar
    of the batches done (succeeded or failed) of all its batches."""
    console = FakeConsole(1, batch_apis=(BATCH,))
    console.sample()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(console.url + "/")
        running = page.locator("tr.job", has_text="3f2a9c0d1e2f3a4b")
        running.wait_for()
        page.screenshot(path=str(artifacts / "console-batch.png"))
        bar = running.locator("progress")
        assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("48", "100")
        assert "running" in running.inner_text() and "45 / 3" in running.inner_text()
        ended = page.locator("tr.job", has_text="9d01b7c2e4f6a8b0")
        assert "succeeded" in ended.inner_text() and "100/100" in ended.inner_text()
        assert "2 running of 4 submitted" in page.locator("main").inner_text()
    finally:
        console.close()


SPLIT = {"name": "split", "kind": "TrafficSplitter", "status": "degraded", "endpoint": "/split", "local_port": 8888,
         "url": "http://127.0.0.1:8888/split", "source": "cortex.yaml:7", "spec_hash": "0f0f",
         "targets": [
             {"name": "api-00", "weight": 80, "shadow": False, "share": 100.0, "status": "live", "down": None,
              "requests": {"total": 12, "p50_ms": 3.5, "2xx": 11, "4xx": 0, "5xx": 1}, "dropped": 0},
             {"name": "api-01", "weight": 20, "shadow": False, "share": 0.0, "status": "error", "down": "is in error",
              "requests": {"total": 3, "p50_ms": None, "2xx": 0, "4xx": 0, "5xx": 3}, "dropped": 0},
             {"name": "<b>shadow</b>", "weight": 100, "shadow": True, "share": 0.0, "status": "not deployed",
              "down": "is not deployed", "requests": {}, "dropped": 4}],
         "notes": ["api-01's 20% goes to the other apis while it is in error"], "refused": 2}


def test_a_traffic_splitters_page_shows_where_its_traffic_goes(browser, artifacts):
    """The overview links a splitter to a page of its own: per api its weight, share now, status
    (and why it takes no traffic), what the splitter sent it; shadow copies dropped, requests
    refused and the notes; names as text."""
    console = FakeConsole(2, splitters=(SPLIT,))
    console.sample()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(console.url + "/")
        page.click("tr[data-splitter=split] a")
        page.wait_for_selector("#splitter tr[data-target=api-00]")
        page.screenshot(path=str(artifacts / "console-splitter.png"))
        assert page.inner_text("h1") == "split" and page.inner_text("#splitter-status") == "degraded"
        cells = page.locator("#splitter tr[data-target=api-00] td").all_inner_texts()
        assert cells == ["api-00", "80", "100.0%", "live", "12", "3.5", "11 / 0 / 1"], cells
        assert "is in error" in page.inner_text("#splitter tr[data-target=api-01]")
        shadow = page.locator("#splitter tr").filter(has_text="<b>shadow</b>")
        assert shadow.locator("td").nth(2).inner_text() == "copies" and page.locator("#splitter b").count() == 0
        text = page.inner_text("#splitter")
        assert "4 copies dropped" in text and "refused: 2 request(s)" in text and "goes to the other apis" in text
        page.click("#splitter tr[data-target=api-00] a")
        page.wait_for_selector("#chart-rps")
        assert page.inner_text("h1") == "api-00"
    finally:
        console.close()
