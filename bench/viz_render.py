"""How fast a ``chargen viz`` page opens in a real browser, against a plain page of the same text.

Builds the page for a text (default: 20,000 characters of word soup) from a checkpoint, or from a
random 2x256 LSTM when none is given, opens it in headless Chromium (selenium) and times from
navigation start to the page's script being done (``body[data-ready]``). The baseline, timed in the
same browser and run, is the same text in one ``<pre>``: the ratio is what the page's script and
data cost over showing the text at all.

    python bench/viz_render.py                      # random model, 20,000 characters
    python bench/viz_render.py --run checkpoints/demo --text corpora/stdlib.txt
"""

from __future__ import annotations

import argparse
import html
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chargen.model import CharLM, ModelConfig  # noqa: E402
from chargen.model.inspect import trace_text  # noqa: E402
from chargen.text.tokenizers import CharTokenizer  # noqa: E402
from chargen.ui.viz import page_data  # noqa: E402
from chargen.ui.viz_page import render_page  # noqa: E402


def word_soup(chars: int) -> str:
    words = "the quick brown fox (jumps) over a 'lazy' dog and \"cat\" runs home to sleep".split()
    g = torch.Generator().manual_seed(0)
    lines, total = [], 0
    while total < chars:
        line = " " * int(torch.randint(0, 3, (1,), generator=g)) * 4 + " ".join(
            words[int(i)] for i in torch.randint(len(words), (8,), generator=g))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:chars]


def open_time(driver, path: Path, rounds: int) -> float:
    """Fastest of ``rounds`` loads: seconds from navigation start to the page being ready."""
    best = float("inf")
    for _ in range(rounds):
        driver.get("about:blank")
        driver.get(path.as_uri())
        while driver.execute_script("return document.body && document.body.dataset.ready") != "1":
            time.sleep(0.01)
        ms = driver.execute_script("return performance.now()")
        best = min(best, ms / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run directory or checkpoint (default: a random 2x256 LSTM)")
    parser.add_argument("--text", help="a text file (default: word soup)")
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = Path(args.text).read_text(encoding="utf-8")[-args.chars:] if args.text else word_soup(args.chars)
    if args.run:
        import chargen

        loaded = chargen.load(args.run)
        model, tokenizer = loaded.model, loaded.tokenizer
    else:
        tokenizer = CharTokenizer(sorted(set(text)))
        torch.manual_seed(0)
        model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden=256)).eval()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        page, plain = Path(tmp) / "viz.html", Path(tmp) / "plain.html"
        data = page_data(trace_text(model, tokenizer, text), tokenizer, "bench", 8e6)
        page.write_text(render_page(data), encoding="utf-8")
        plain.write_text(f"<!DOCTYPE html><meta charset=utf-8><pre>{html.escape(text)}</pre>"
                         "<script>document.body.dataset.ready = '1'</script>", encoding="utf-8")
        try:
            viz_s, plain_s = open_time(driver, page, args.rounds), open_time(driver, plain, args.rounds)
        finally:
            driver.quit()
        print(f"{len(text):,} characters, page {page.stat().st_size / 1e6:.1f} MB "
              f"({data['stored_units']} of {data['total_units']} units stored)")
        print(f"viz page ready in {viz_s:.3f} s; plain <pre> page {plain_s:.3f} s; ratio {viz_s / plain_s:.1f}x")


if __name__ == "__main__":
    main()
