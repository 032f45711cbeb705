"""Makes the README's pictures from the sample models, with the commands the README shows:
docs/activations.png (`grucli plot --activations`), docs/report.png (the `grucli report` page,
as headless Chromium shows it 1280 px wide) and docs/dynamics.png (`grucli plot --trajectories`
of the counting GRU's store).

    python docs/make_pictures.py        # needs the test extra (matplotlib, selenium) and chromium
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _grucli(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "grucli", *arguments], check=True, cwd=ROOT)


def _screenshot(page: Path, target: Path, width: int = 1280, height: int = 1500) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    with tempfile.TemporaryDirectory() as profile:
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                         f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
        try:
            driver.get(page.as_uri())
            driver.save_screenshot(str(target))
        finally:
            driver.quit()


def main() -> int:
    _grucli("plot", "sample_models/q_gru10_seq.keras", "--activations", "-o", str(DOCS / "activations.png"), "--force")
    with tempfile.TemporaryDirectory() as scratch:
        page = Path(scratch) / "report.html"
        _grucli("report", "sample_models/k3_masking.keras", "--input", "sample_models/seq_6x2_prepadded.csv", "-o", str(page))
        _screenshot(page, DOCS / "report.png")
        store = Path(scratch) / "acts.zarr"
        _grucli("activations", "sample_models/k3_counter_gru.keras", "--input", "sample_models/counting_x.npy", "-o", str(store))
        _grucli("plot", "sample_models/k3_counter_gru.keras", "--trajectories", str(store), "--labels", "sample_models/counting_total.npy",
                "-o", str(DOCS / "dynamics.png"), "--force")
    print(f"wrote {DOCS / 'activations.png'}, {DOCS / 'report.png'} and {DOCS / 'dynamics.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
