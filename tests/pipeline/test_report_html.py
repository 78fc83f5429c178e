"""report.html beside report.md for `run`, `eval report` and `eval compare`: one self-contained page
(no script, no network, charts embedded) with the tables; rendered by headless Chromium when present."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.report_runs import BASE, TUNED, flips, write_eval_run, write_pipeline_run
from instructkit.cli.app import app
from instructkit.evaluate.eval_report import write_report
from instructkit.pipeline.recipe import load_recipe
from instructkit.pipeline.report import write_run_report

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "heldout_rows/<img src=x>"  # a task name from a user file must be shown, never parsed as HTML


class Page(HTMLParser):
    """What a browser would fetch or run, and the tables' header and body text."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def urls(self) -> list[str]:
        return [v for _, attrs in self.tags for k, v in attrs.items() if k in ("src", "href") and v]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with the report stage done (HTML at the root and in report/)."""
    root = tmp_path_factory.mktemp("runs") / "quickstart"
    tuned = {**TUNED, EVIL: ("heldout_rows/0-shot", 25.0, flips(12, 9))}
    inputs = write_pipeline_run(root, {**BASE, EVIL: ("heldout_rows/0-shot", 25.0, flips(12, 2))}, tuned)
    write_run_report(load_recipe("quickstart")[0], inputs, root / "report")
    return root


def assert_self_contained(page: Page, folder: Path) -> None:
    """No script, every image inline, every link a relative path to a file that exists."""
    assert not any(tag in ("script", "iframe", "object", "link") for tag, _ in page.tags)
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a" and not attrs["href"].startswith("#")]
    assert links and all((folder / href).exists() for href in links), links
    assert not [u for u in page.urls() if u.startswith(("http:", "https:", "//", "file:"))]


def test_run_report_html_is_self_contained_and_has_every_section(run_dir):
    for folder in (run_dir, run_dir / "report"):
        html = (folder / "report.html").read_text()
        page = Page(html)
        assert_self_contained(page, folder)
        titles = [h for h in html.split("<h2>")[1:]]
        assert [t.split("<")[0] for t in titles] == [
            "Summary",
            "Evaluation by set",
            "What improved and what did not",
            "Evaluation by task",
            "Training",
            "Data",
            "Recipe",
            "Artifacts",
        ]
        by_set = next(t for t in page.tables if t[0][0] == "eval set")
        assert by_set[0] == ["eval set", "base [95% CI]", "tuned [95% CI]", "Δ [95% CI]", "paired test"]
        cluster = next(r for r in by_set if r[0] == "heldout_cluster/0-shot")
        assert cluster[4] == "not significant (p=0.125)" and "[" in cluster[1]
        data = {r[1]: r[2] for r in next(t for t in page.tables if t[0][0] == "stage")[1:]}
        assert data["rows rejected (see rejects.jsonl)"] == "2"
        assert data["packing efficiency (real tokens / capacity)"] == "99.1%"
        assert "&lt;img src=x&gt;" in html and EVIL in [r[0] for t in page.tables for r in t]
        assert "holdout_clusters:" in html and 'class="up"' in html  # recipe YAML; a significant row


def test_eval_report_and_compare_write_html_beside_markdown(tmp_path):
    a, b = write_eval_run(tmp_path / "a", BASE), write_eval_run(tmp_path / "b", TUNED)
    write_report([a, b], tmp_path / "report")
    page = Page((tmp_path / "report" / "report.html").read_text())
    assert_self_contained(page, tmp_path / "report")
    assert page.tables[0][0][:5] == ["task", "metric", "random", "a", "b"]
    assert page.tables[1][-1][0] == "normalized average"

    result = CliRunner().invoke(app, ["eval", "compare", str(a), str(b), "--out", str(tmp_path / "cmp.md")])
    assert result.exit_code == 0, result.output
    assert "paired test" in result.output and (tmp_path / "cmp.md").is_file()
    page = Page((tmp_path / "cmp.html").read_text())
    assert_self_contained(page, tmp_path)
    assert [t[0][-1] for t in page.tables] == ["after Holm (7 tests)", "paired test"]


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
def test_run_report_renders_in_headless_chromium(run_dir, tmp_path):
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            (run_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]  # JS errors, CSP refusals
    assert not console, console
    dom = Page(done.stdout)
    heads = [t[0] for t in dom.tables]
    assert ["eval set", "base [95% CI]", "tuned [95% CI]", "Δ [95% CI]", "paired test"] in heads
    assert any(h[:2] == ["task", "metric"] for h in heads)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
