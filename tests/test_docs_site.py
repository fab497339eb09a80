"""The docs site builds with ``mkdocs build --strict``, and a broken reference fails it.

The CLI reference is rendered from the typer app and the API reference from the docstrings at
build time, so these tests hold the site to the code: every command appears, the public API
renders, and a reference to a symbol that does not exist (a renamed class) fails the build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mkdocs.yml"


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config), "--site-dir", str(site)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"mkdocs exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = _build(CONFIG, out)
    assert proc.returncode == 0, _output(proc)
    assert "WARNING" not in proc.stderr, _output(proc)
    return out


def _page(site: Path, name: str) -> str:
    path = site / name / "index.html"
    assert path.is_file(), f"{name} was not built; built: {sorted(p.name for p in site.iterdir())}"
    return path.read_text(encoding="utf-8")


def test_every_nav_page_is_built(site: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())

    def pages(nav: Any) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for v in nav.values() for p in pages(v)]
        return [p for item in nav for p in pages(item)]

    for page in pages(config["nav"]):
        stem = page[:-3]  # a/b.md -> a/b/index.html; a/index.md -> a/index.html
        built = site / (stem[:-5] if stem.endswith("index") else stem + "/") / "index.html"
        assert built.is_file(), f"nav page {page} has no {built.relative_to(site)}"
    for page in ("concepts/point-in-time", "concepts/fills-and-costs", "concepts/rewards",
                 "concepts/replay", "isolation", "guides/write-an-agent", "guides/run-a-contest",
                 "guides/paper-trade", "guides/export-training-data", "architecture"):
        assert (site / page / "index.html").is_file(), page


def test_the_cli_reference_is_generated_from_the_app(site: Path) -> None:
    import typer

    from tradesim.cli import app

    html = _page(site, "cli")
    assert "<!-- cli-reference -->" not in html  # the hook replaced the marker
    root: Any = typer.main.get_command(app)  # a group; typer vendors click, so duck-typed
    ctx = root.context_class(root, info_name="tradesim")
    names = list(root.list_commands(ctx))
    assert {"backtest", "paper", "evaluate", "synth"} <= set(names)
    for name in names:
        command = root.get_command(ctx, name)
        assert f"tradesim {name}</code>" in html, f"command {name!r} missing from the CLI page"
        for sub in getattr(command, "list_commands", lambda _: [])(ctx):
            assert f"tradesim {name} {sub}</code>" in html, f"'{name} {sub}' missing"
    # the help text itself, not just the headings: a flag of backtest and one of paper start
    assert "--fill" in html and "--replay" in html and "--detach" in html


def test_the_api_reference_renders_the_public_api(site: Path) -> None:
    import tradesim

    engine = _page(site, "api/engine")
    assert 'id="tradesim.engine.backtest.BacktestConfig"' in engine
    assert 'id="tradesim.engine.session.Session"' in engine
    assert 'id="tradesim.contracts.Observation"' in _page(site, "api/contracts")
    assert 'id="tradesim.llm.gateway.Gateway"' in _page(site, "api/llm")
    assert 'id="tradesim.live.daemon.PaperDaemon"' in _page(site, "api/live")
    # every lazy top-level export is documented where it lives, and the overview links to it
    everything = "".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    overview = _page(site, "api")
    for name, module in tradesim._EXPORTS.items():
        anchor = f"{module}.{name}"
        assert f'id="{anchor}"' in everything, f"tradesim.{name} ({anchor}) is not documented"
        assert f"#{anchor}" in overview, f"the API overview does not link tradesim.{name}"


def _mini_site(tmp_path: Path, body: str) -> Path:
    """A copy of the real config (theme, plugins, options, hooks, strict) over one page."""
    config = yaml.safe_load(CONFIG.read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Reference\n\n{body}\n", encoding="utf-8")
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}], exclude_docs=None,
                  hooks=[str(ROOT / h) for h in config.get("hooks", [])])
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT)]
            options = python.get("options", {})
            options["extensions"] = [str(ROOT / e) if str(e).endswith(".py") else e
                                     for e in options.get("extensions", [])]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_the_copied_config_builds_a_valid_reference(tmp_path: Path) -> None:
    """The control for the next test: the copied config itself builds."""
    config = _mini_site(tmp_path, "::: tradesim.engine.costs.CostModel\n\n"
                        "See [CostModel][tradesim.engine.costs.CostModel].")
    proc = _build(config, tmp_path / "site")
    assert proc.returncode == 0, _output(proc)
    assert 'id="tradesim.engine.costs.CostModel"' in (tmp_path / "site/index.html").read_text()


@pytest.mark.parametrize(("body", "missing"), [
    ("::: tradesim.does_not_exist", "tradesim.does_not_exist"),
    ("::: tradesim.engine.costs.CostModel\n\nSee [it][tradesim.engine.costs.NoSuchModel].",
     "tradesim.engine.costs.NoSuchModel"),
], ids=["directive", "cross-reference"])
def test_a_broken_reference_fails_the_strict_build(tmp_path: Path, body: str,
                                                   missing: str) -> None:
    proc = _build(_mini_site(tmp_path, body), tmp_path / "site")
    assert proc.returncode != 0, f"a broken reference built:\n{_output(proc)}"
    assert missing in proc.stdout + proc.stderr, _output(proc)
