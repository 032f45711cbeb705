"""`grucli report`: the page is checked in a real headless Chromium (Debian's chromium and
chromium-driver, which .ci/run installs): it loads from a file:// URL with no console error and no
network request, every recurrent layer has its section, and pointing at a weight cell and at an
activation cell shows the right gate, unit and value (from grucli.load and replay --gates)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from click.testing import CliRunner

import grucli
from grucli.cli import cli

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FEATURES = 3


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium drives chromium (pip install -e '.[test]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _model(keras: Any, folder: Path) -> Path:
    """A masked GRU feeding an LSTM, as a sequence tagger is built."""
    L = keras.layers
    x = keras.Input((None, FEATURES))
    tagged = L.LSTM(3, return_sequences=True, name="tagger")(L.GRU(4, return_sequences=True, name="encoder")(L.Masking(0.0)(x)))
    model = keras.Model(x, L.Dense(2, activation="softmax")(tagged))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.7, size=w.shape).astype("float32") for w in model.get_weights()])
    model.save(folder / "tagger.keras")
    return folder / "tagger.keras"


def _requests(driver: Any) -> list[tuple[str, str]]:
    """(the document that asked, the URL asked for) of every request the browser made since the last call."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            found.append((message["params"].get("documentURL", ""), message["params"]["request"]["url"]))
    return found


def _point(driver: Any, canvas: Any, spec: dict[str, Any], row: int, col: int) -> str:
    """Move the pointer onto cell (row, col) of a heatmap and read what the page shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    border = (canvas.size["width"] - spec["cols"] * spec["cellW"]) / 2  # the canvas's CSS border
    x = border + (col + 0.5) * spec["cellW"] - canvas.size["width"] / 2  # Selenium offsets from the element's centre
    y = border + (row + 0.5) * spec["cellH"] - canvas.size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(canvas, int(round(x)), int(round(y))).perform()
    tooltip = driver.find_element(By.ID, "tooltip")
    assert tooltip.is_displayed()
    return tooltip.text


def _value(text: str) -> float:
    return float(re.search(r"value (\S+)$", text).group(1))


def test_report_in_chromium(keras3: Any, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path = _model(keras3, tmp_path)
    x = np.random.default_rng(4).normal(size=(2, 8, FEATURES)).astype("float32")
    x[0, :2] = 0.0  # pre-padded: steps 0 and 1 of sample 0 are masked
    np.save(tmp_path / "x.npy", x)
    page = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(page), "--no-verify"])
    assert result.exit_code == 0, result.stderr
    browser.get("about:blank")  # the browser's own new tab page loads chrome:// resources of its own
    _requests(browser)
    browser.get_log("browser")
    browser.get(page.as_uri())
    assert browser.title == "grucli report: tagger.keras"
    assert [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
    requested = _requests(browser)
    # The page asks for nothing but itself, and nothing at all goes to a network.
    assert [url for document, url in requested if document == page.as_uri()] == [page.as_uri()], requested
    assert not [url for _, url in requested if url.split(":")[0] in ("http", "https", "ws", "wss", "ftp")], requested
    sections = browser.find_elements(By.CSS_SELECTOR, "section.layer")
    assert [section.get_attribute("data-path") for section in sections] == ["encoder", "tagger"]
    data = json.loads(browser.find_element(By.ID, "grucli-data").get_attribute("textContent"))

    # A weight cell: the encoder's reset gate, recurrent kernel, previous-state unit 1 → unit 2.
    spec = next(m for m in data["maps"] if m["layer"] == "encoder" and m.get("gate") == "r" and m["array"] == "recurrent_kernel")
    shown = _point(browser, browser.find_element(By.ID, spec["id"]), spec, row=1, col=2)
    assert shown.startswith("gate r (reset gate) · recurrent_kernel · unit 2 · previous-state unit 1 · value ")
    with grucli.load(path) as loaded:
        expected = float(loaded.layer("encoder").gate("r").recurrent_kernel[1, 2])
    assert _value(shown) == pytest.approx(expected, rel=1e-5)

    # An activation cell: the tagger's forget gate, unit 1 at step 5 of sample 0, as replay --gates writes it.
    result = CliRunner().invoke(cli, ["replay", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                                      "--gates", str(tmp_path / "gates.npz")])
    assert result.exit_code == 0, result.stderr
    forget = np.load(tmp_path / "gates.npz")["tagger/f"][0]
    spec = next(m for m in data["maps"] if m["layer"] == "tagger" and m.get("name") == "f")
    shown = _point(browser, browser.find_element(By.ID, spec["id"]), spec, row=1, col=5)
    assert shown.startswith("f (forget gate) · unit 1 · step 5 · value ")
    assert _value(shown) == pytest.approx(float(forget[5, 1]), rel=1e-5)
    # a masked step says so
    shown = _point(browser, browser.find_element(By.ID, spec["id"]), spec, row=0, col=1)
    assert shown == "f (forget gate) · unit 0 · step 1 · masked"
    assert [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []


# --- the command, without a browser ---------------------------------------------------------------------


def test_a_model_grucli_cannot_replay_still_gets_its_weights(tmp_path: Path) -> None:
    """crema's Lambda layers hold Python code: no activations and no verify, each with its reason;
    the two Bidirectional GRU directions' weights are all there."""
    from conftest import real

    page = tmp_path / "crema.html"
    result = CliRunner().invoke(cli, ["report", str(real("crema_beats_bigru_keras2.0.5.h5")), "--random", "-o", str(page)])
    assert result.exit_code == 0, result.stderr
    assert "activations: grucli cannot replay this model: layer lambda_2 (Lambda) is not one the replay engine can run" in result.stderr
    text = page.read_text(encoding="utf-8")
    assert "Activations: grucli cannot replay this model: layer lambda_2 (Lambda)" in text
    data = json.loads(re.search(r'<script type="application/json" id="grucli-data">(.*?)</script>', text, re.S).group(1))
    from grucli.output.html_report import decoded_values

    with grucli.load(real("crema_beats_bigru_keras2.0.5.h5")) as loaded:
        for layer in loaded.recurrent_layers:
            for gate in layer.gates:
                spec = next(m for m in data["maps"] if m["layer"] == layer.path and m.get("gate") == gate
                            and m["array"] == "recurrent_kernel")
                shown = decoded_values(spec["values"], spec["rows"], spec["cols"])
                np.testing.assert_allclose(shown, layer.gate(gate).recurrent_kernel, rtol=1e-7)  # 64 × 64, shown whole
                spec = next(m for m in data["maps"] if m["layer"] == layer.path and m.get("gate") == gate and m["array"] == "kernel")
                shown = decoded_values(spec["values"], spec["rows"], spec["cols"])  # 272 input rows, as 128 blocks of 2 or 3
                starts = spec["rowStarts"]
                kernel = np.asarray(layer.gate(gate).kernel, np.float64)
                means = np.stack([kernel[a:b].mean(axis=0) for a, b in zip(starts, starts[1:])])
                np.testing.assert_allclose(shown, means, rtol=1e-6, atol=1e-9)  # the float32 of a float64 mean
    assert not [m for m in data["maps"] if m["kind"] == "activity"]


def test_report_without_an_input_and_of_a_weights_only_file(tmp_path: Path) -> None:
    from conftest import sample

    result = CliRunner().invoke(cli, ["report", str(sample("k3_gru.weights.h5")), "-o", str(tmp_path / "w.html")])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.endswith("1 recurrent layer(s); activations: no input was given (--input, or --random for a seeded one)\n")
    result = CliRunner().invoke(cli, ["report", str(sample("k3_gru.weights.h5")), "--random", "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {sample('k3_gru.weights.h5')} holds weights only; its activations need its architecture: "
                             "pass --config MODEL.json\n")
    result = CliRunner().invoke(cli, ["report", str(sample("k3_gru.weights.h5")), "-o", str(tmp_path / "w.html")])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'w.html'} already exists; pass --force to overwrite it\n"


def test_report_says_why_verify_did_not_run_without_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from conftest import sample

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name in ("keras", "tf_keras") else found(name, *rest))
    with grucli.load(sample("k3_gru.keras")) as loaded:
        report = grucli.api.report(loaded, np.zeros((1, 5, 3), np.float32))
    assert report.verify is None
    assert report.verify_missing == "Keras is not installed (pip install 'grucli[verify]'), so predict was not compared"
    assert report.layers[0].activity is not None
    # asked for by name, its absence is an error
    result = CliRunner().invoke(cli, ["report", str(sample("k3_gru.keras")), "--random", "--verify", "-o", str(tmp_path / "v.html")])
    assert result.exit_code == 2
    assert result.stderr == ("Error: report --verify needs Keras (keras or tf-keras), which is not installed; install it with "
                             "pip install 'grucli[verify]', or leave --verify out\n")
    assert not (tmp_path / "v.html").exists()


def test_names_from_the_file_are_escaped(tmp_path: Path, keras3: Any) -> None:
    """A layer named like markup stays text, in the HTML and in the page's data."""
    model = keras3.Sequential([keras3.Input((None, 2)), keras3.layers.GRU(2, name="g<script>x")])
    model.save(tmp_path / "odd.keras")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "odd.keras"), "--random", "--no-verify", "-o", str(tmp_path / "odd.html")])
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "odd.html").read_text(encoding="utf-8")
    assert "<script>x" not in text
    assert "g&lt;script&gt;x" in text and "g\\u003cscript\\u003ex" in text
