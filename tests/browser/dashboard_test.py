#!/usr/bin/python3
"""The dashboard in a real browser: Debian's chromium, headless, driven by chromium-driver
through python3-selenium, against a real controller and trainer on loopback.

Checks: the page asks for the API token and keeps it out of URLs; it loads with no console
errors; it lists the trainer; a job started from its form shows a progress bar that advances,
then a loss curve with a point after epoch 1; the try-it panel classifies an uploaded PNG; a
sweep's leaderboard and its accuracy-per-parameter charts show every trial; a rollout can be
aborted; a registered folder of images shows its classes, skipped files and thumbnails;
a wrong token is said to be wrong; nothing overflows a phone-sized screen. Saves screenshots.

usage: dashboard_test.py --controller BIN --trainer BIN --data-dir DIR --out DIR
Exit 0 when every check passed, 1 otherwise, 77 when no browser is installed (skipped).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from harness import free_port, png_28x28, poll  # noqa: E402

TOKEN = "dashboard-test-token-0123456789abcdef"


class Cluster:
    def __init__(self, args, home):
        self.procs = []
        self.home = home
        train_port = free_port("127.0.0.2")
        self.port = free_port("127.0.0.1")
        token_file = os.path.join(home, "api_token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(token_file, 0o600)
        self.start([args.trainer, "--host", "127.0.0.2", "--port", str(train_port), "--home-dir", home,
                    "--data-dir", args.data_dir, "--threads", "1"], "trainer.log")
        self.start([args.controller, "--host", "127.0.0.1", "--port", str(self.port), "--subnet", "127.0.0.0/24",
                    "--train-port", str(train_port), "--home-dir", home, "--data-dir", args.data_dir,
                    "--scan-interval-ms", "500", "--api-token-file", token_file], "controller.log")
        self.url = f"http://127.0.0.1:{self.port}"
        poll("the controller", lambda: urllib.request.urlopen(self.url + "/healthz", timeout=2).status == 200, 30)

    def start(self, argv, log):
        out = open(os.path.join(self.home, log), "wb")
        self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def logs(self):
        text = ""
        for name in ("controller.log", "trainer.log"):
            with open(os.path.join(self.home, name), errors="replace") as f:
                text += f"--- {name} ---\n" + "".join(f.readlines()[-40:])
        return text


def browser(chromedriver):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1700", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--metrics-recording-only", "--no-default-browser-check"):
        options.add_argument(flag)
    if os.path.exists("/usr/bin/chromium"):
        options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=options)


SWEEP = {"sweep_id": "browser-sweep", "trials": 3, "seed": 2,
         "base": {"example_idxs": [0, 2000], "test_idxs": [0, 500], "train_opts": {"batch_size": 64}},
         "space": {"lr": {"type": "log_uniform", "min": 0.003, "max": 0.3},
                   "label_smoothing": {"type": "choice", "values": [0, 0.1]}},
         "scheduler": {"type": "random", "epochs": 1}}


def api(cluster, path, body=None, method=None):
    request = urllib.request.Request(cluster.url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
                                     method=method)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def sweep_view(cluster, driver, check, out):
    """A 3-trial sweep started through the API: its leaderboard and one accuracy chart per parameter."""
    api(cluster, "/sweeps", SWEEP)
    poll("the sweep to end", lambda: api(cluster, "/sweeps/browser-sweep")["state"] != "running", 180)
    ended = api(cluster, "/sweeps/browser-sweep")
    script = ("const rows = document.querySelectorAll('#sweep-trials tbody tr').length;"
              "const charts = [...document.querySelectorAll('#sweep-charts svg')].map("
              "(c) => c.dataset.param + ':' + c.dataset.points + ':' + c.querySelectorAll('circle').length);"
              "return [rows, charts, document.getElementById('sweep-summary').textContent];")
    seen = poll("the sweep's leaderboard and charts",
                lambda: (lambda r: r if r[0] == 3 and "succeeded" in r[2] else None)(driver.execute_script(script)), 30)
    check("the sweeps view shows the leaderboard of 3 trials and a chart per parameter with a dot per trial",
          ended["state"] == "succeeded" and sorted(seen[1]) == ["label_smoothing:3:3", "lr:3:3"],
          f"{seen[1]}; {seen[2]}")
    driver.execute_script("document.getElementById('sweeps-section').scrollIntoView()")
    driver.find_element("css selector", "#sweeps-section").screenshot(os.path.join(out, "dashboard-sweeps.png"))


def deployments_view(cluster, driver, check, out):
    """A served name with a rollout under way (a long shadow phase): the view shows it with its
    weight chart, and its abort button aborts it."""
    api(cluster, "/deployments/browser", {"model_id": "browser-sweep-t0"}, method="PUT")
    api(cluster, "/deployments/browser/rollout",
        {"model_id": "browser-sweep-t1", "eval_idxs": [0, 200], "shadow_seconds": 600,
         "gates": {"max_accuracy_drop": 1, "max_class_recall_drop": 1}})
    poll("the rollout's shadow phase",
         lambda: api(cluster, "/deployments/browser")["rollout"]["state"] == "shadow", 120)
    script = ("const row = [...document.querySelectorAll('#deployments tbody tr')].find((r) => r.textContent.includes('browser'));"
              "return row ? [row.textContent, !!row.querySelector('button.abort'),"
              " document.querySelectorAll('#weight-chart path').length, document.getElementById('deployment-summary').textContent] : null;")
    seen = poll("the deployment in the view", lambda: (lambda r: r if r and r[1] and 'shadow' in r[0] else None)(
        driver.execute_script(script)), 30)
    check("the deployments view shows the name, its stable and candidate, the shadow phase and a weight chart",
          "browser-sweep-t0 v1" in seen[0] and "browser-sweep-t1 v1" in seen[0] and seen[2] >= 1, str(seen))
    driver.execute_script("document.getElementById('deployments-section').scrollIntoView()")
    driver.find_element("css selector", "#deployments-section").screenshot(os.path.join(out, "dashboard-deployments.png"))
    driver.find_element("css selector", "#deployments button.abort").click()
    driver.switch_to.alert.accept()
    aborted = poll("the abort", lambda: api(cluster, "/deployments/browser")["rollout"]["state"] == "aborted", 30)
    shown = poll("the aborted rollout in the view", lambda: "aborted" in find_text(driver, "#deployment-summary"), 30)
    check("its abort button aborts the rollout: the stable serves everything again", aborted and shown, "")
    # A rollout that is rolled back (no live traffic: too few requests in its shadow phase) shows
    # each gate's figure beside its limit and the reason, marked as an error.
    api(cluster, "/deployments/browser/rollout",
        {"model_id": "browser-sweep-t1", "eval_idxs": [0, 200], "shadow_seconds": 1, "min_requests": 1000,
         "gates": {"max_accuracy_drop": 1, "max_class_recall_drop": 1}})
    poll("the rollback", lambda: api(cluster, "/deployments/browser")["rollout"]["state"] == "rolled_back", 120)
    script = ("const rows = [...document.querySelectorAll('#deployment-gates tbody tr')].map((r) => r.textContent);"
              "const reason = document.getElementById('deployment-reason');"
              "return [rows, reason.textContent, reason.className, document.getElementById('deployment-summary').textContent];")
    seen = poll("the rolled back rollout in the view", lambda: (lambda r: r if 'rolled_back' in r[3] and r[1] else None)(
        driver.execute_script(script)), 30)
    check("a rolled back rollout shows every gate's figure beside its limit, and its reason as an error",
          seen is not None and any("≤" in row or "≥" in row for row in seen[0]) and seen[2] == "error", str(seen))


def datasets_view(cluster, driver, check, out):
    """A folder of images registered through the API: the datasets view lists it beside the
    built-ins, and its detail shows the classes with their counts, the skipped file and thumbnails."""
    for cls in ("bars", "more-bars"):
        folder = os.path.join(cluster.home, "datasets", "shapes", "train", cls)
        os.makedirs(folder)
        for i in range(4):
            with open(os.path.join(folder, f"{i}.png"), "wb") as f:
                f.write(png_28x28())
    with open(os.path.join(cluster.home, "datasets", "shapes", "train", "bars", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nnot really")
    api(cluster, "/datasets", {"name": "shapes", "test_fraction": 0.25})
    row = "[...document.querySelectorAll('#datasets tbody tr')].find((r) => r.textContent.startsWith('shapes'))"
    poll("the folder dataset in the view", lambda: driver.execute_script(f"return !!{row}"), 40)
    driver.execute_script(f"{row}.click()")
    script = ("return [document.querySelectorAll('#dataset-classes tbody tr').length,"
              " document.querySelectorAll('#dataset-thumbs canvas').length,"
              " document.getElementById('dataset-skipped').hidden ? '' : document.getElementById('dataset-skipped').textContent,"
              " document.getElementById('dataset-summary').textContent];")
    seen = poll("the dataset's detail", lambda: (lambda r: r if r[1] >= 2 else None)(driver.execute_script(script)), 30)
    check("the datasets view shows a registered folder: its classes with counts, the skipped file and thumbnails",
          seen[0] == 2 and "train/bars/broken.png" in seen[2] and "HOME_DIR/datasets/shapes" in seen[3], str(seen))
    driver.execute_script("document.getElementById('datasets-section').scrollIntoView()")
    driver.find_element("css selector", "#datasets-section").screenshot(os.path.join(out, "dashboard-datasets.png"))


def find_text(driver, selector):
    return driver.find_element("css selector", selector).text


def run(args, cluster, driver, checks):
    from selenium.webdriver.common.by import By
    find = lambda css: driver.find_element(By.CSS_SELECTOR, css)  # noqa: E731

    def check(name, ok, detail=""):
        checks.append((name, bool(ok)))
        print(("PASS: " if ok else "FAIL: ") + name + (f" ({detail})" if detail else ""), flush=True)
        return ok

    driver.get(cluster.url + "/")
    poll("the token dialog", lambda: find("#token-dialog").get_attribute("open") is not None, 20)
    check("the page asks for the API token before calling the API", True)
    find("#token-input").send_keys(TOKEN)
    find("#token-save").click()
    poll("the trainer in the table", lambda: "127.0.0.2" in find("#trainers").text, 60)
    check("the trainers table lists 127.0.0.2", True, find("#trainers tbody").text.replace("\n", " | "))
    check("the token is in sessionStorage, not the URL, not localStorage",
          driver.execute_script("return sessionStorage.getItem('mlswarm.api_token')") == TOKEN
          and TOKEN not in driver.current_url and driver.execute_script("return localStorage.length") == 0)

    model_input = find("#f-model")
    model_input.clear()
    model_input.send_keys("browser-model")
    # 40,000 images, about 11 s on one thread: long enough to watch the bar move (a job of 6,000
    # finished in 3 s, between two of the page's redraws).
    for css, value in (("#f-epochs", "2"), ("#f-examples", "20000"), ("#f-test-examples", "2000")):
        find(css).clear()
        find(css).send_keys(value)
    find("#f-submit").click()
    poll("the job's card", lambda: find("#jobs .job"), 20)
    seen = set()

    def progress_values():  # the cards are redrawn every second: find them again each time
        seen.add(int(find("#jobs .job .bar").get_attribute("aria-valuenow")))
        return len([v for v in seen if 0 < v < 100]) >= 2

    poll("the progress bar to advance", progress_values, 180)
    check("a job started from the page shows a progress bar that advances", True,
          f"values seen {sorted(seen)}; line: {find('#jobs .job .job-line').text}")
    poll("a loss curve point", lambda: int(find("#loss-chart").get_attribute("data-points") or 0) >= 1, 240)
    check("the loss curve has a point after epoch 1", True, find("#model-summary").text)
    driver.save_screenshot(os.path.join(args.out, "dashboard-training.png"))
    poll("the job to succeed", lambda: "succeeded" in find("#jobs .job").get_attribute("class"), 240)
    poll("two points per curve", lambda: int(find("#accuracy-chart").get_attribute("data-points") or 0) >= 2, 30)
    check("the finished job shows accuracy curves with both epochs", True, find("#model-summary").text)
    poll("per-class bars", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#per-class-bars .prob")) == 10, 30)
    cells = driver.find_elements(By.CSS_SELECTOR, "#confusion td")
    # In one script: the page redraws the matrix every second, which would stale the elements.
    counted = driver.execute_script(
        "return [...document.querySelectorAll('#confusion td')].reduce((s, c) => s + Number(c.textContent), 0)")
    split = find("#per-class-split").text
    check("per-class accuracy bars and a 10x10 confusion matrix of the form's 2,000 test images",
          len(cells) == 100 and counted == 2000 and split == "(test images 0 to 1,999)",
          f"{len(cells)} cells counting {counted} images, {split}; worst class: {find('#per-class-bars .prob').text}")

    png = os.path.join(cluster.home, "upload.png")
    with open(png, "wb") as f:
        f.write(png_28x28())
    poll("the model in the try-it list", lambda: "browser-model" in find("#try-model").text, 30)
    find("#try-file").send_keys(png)
    answer = poll("the upload's class", lambda: find("#try-answer").text if "upload.png" in find("#try-answer").text else "", 30)
    bars = driver.find_elements(By.CSS_SELECTOR, "#try-bars .prob")
    check("the try-it panel shows a class for an uploaded PNG, with probability bars", len(bars) == 10,
          f"{answer}; {len(bars)} bars; top: {bars[0].text.replace(chr(10), ' ') if bars else ''}")
    find("#try-example").click()
    answer = poll("a test example's class", lambda: find("#try-answer").text if "test example" in find("#try-answer").text else "", 30)
    check("a random test example is classified", True, answer)
    example = api(cluster, "/datasets/fashion-mnist/examples?split=test&start=0&count=1")["examples"]
    row = "[...document.querySelectorAll('#serving tbody tr')].find((r) => r.textContent.startsWith('browser-model'))"
    cells = f"const r = {row}; return r && r.cells[3].textContent.endsWith(' ms') ? [...r.cells].map((c) => c.textContent) : null"

    def predicted_and_shown():  # predictions until the tuner has judged a window and the page shows its p99
        for _ in range(10):
            api(cluster, "/predict", {"model_id": "browser-model", "examples": example})
        return driver.execute_script(cells)

    served = poll("the model's p99 in the serving view", predicted_and_shown, 60)
    summary = find("#serving-summary").text
    check("the serving view shows the model's batch cap, wait and p99 against the target",
          int(served[1]) >= 1 and served[2].endswith(" ms") and int(served[5]) >= 1
          and "p99 target 10.0 ms" in summary, f"{served}; {summary}")
    sweep_view(cluster, driver, check, args.out)
    deployments_view(cluster, driver, check, args.out)
    datasets_view(cluster, driver, check, args.out)
    driver.save_screenshot(os.path.join(args.out, "dashboard.png"))

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    check("no console errors", not severe, json.dumps(severe)[:600])

    driver.set_window_size(390, 844)
    driver.refresh()
    poll("the phone-sized page", lambda: "127.0.0.2" in find("#trainers").text, 30)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check("nothing overflows a 390 px wide screen", overflow <= 1, f"{overflow} px too wide")
    driver.save_screenshot(os.path.join(args.out, "dashboard-phone.png"))

    driver.execute_script("sessionStorage.setItem('mlswarm.api_token', 'not-the-token')")
    driver.refresh()
    reason = poll("the wrong-token notice",
                  lambda: find("#token-reason").text if find("#token-dialog").get_attribute("open") is not None else "", 20)
    check("a wrong token is said to be wrong", "403" in reason or "401" in reason, reason)
    # The refused calls above are the only console errors allowed: Chrome logs every 4xx.


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--controller", required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("SKIP: python3-selenium is not installed")
        return 77
    if not os.path.exists(chromedriver):
        print("SKIP: chromium-driver is not installed")
        return 77
    os.makedirs(args.out, exist_ok=True)
    checks = []
    home = tempfile.mkdtemp(prefix="mlswarm-browser-")
    cluster = Cluster(args, home)
    driver = None
    try:
        driver = browser(chromedriver)
        run(args, cluster, driver, checks)
    except Exception as e:
        checks.append(("the test ran to the end", False))
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        if driver is not None:
            driver.save_screenshot(os.path.join(args.out, "dashboard-failure.png"))
        print(cluster.logs())
    finally:
        if driver is not None:
            driver.quit()
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    failed = [name for name, ok in checks if not ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed; screenshots in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
