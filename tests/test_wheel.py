"""The installed wheel resolves agents exactly as the checkout does (specs ship with it).

Builds the wheel, installs it into a fresh virtual environment that borrows this environment's
third-party packages (not its editable tradesim), and compares the resolved config of a dry run
of every shipped spec (on the embedded sample, which ships in the wheel too) with the checkout's.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DRY_RUN = """
import json, sys
from tradesim.agents.registry import available_agents, spec_dirs
from tradesim.engine.backtest import BacktestConfig
from tradesim.evaluate.backtest import estimate_backtest
from tradesim.data.synthetic import sample_dir
out = {"origin": __import__("tradesim").__file__, "sample": str(sample_dir()), "specs": {}}
for name in sorted(p.stem for p in spec_dirs()[-1].glob("*.toml")):
    params = {"checkpoint": sys.argv[1]} if name == "qtnet" else {}
    config = BacktestConfig.build(agent=name, symbols=["ALPHA"], start="2019-01-02",
                                  end="2019-03-29", agent_params=params)
    out["specs"][name] = estimate_backtest(config=config)["config"]
print(json.dumps(out, sort_keys=True))
"""


def _dry_run(python: str, cwd: Path, checkpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRADESIM_SPEC_PATH", "TRADESIM_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                        "PYTHONPATH")}
    done = subprocess.run([python, "-c", _DRY_RUN, checkpoint], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_installed_wheel_resolves_the_same_config_as_the_checkout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("tradesim-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                                "--no-deps", "-q", str(wheel)], capture_output=True, text=True,
                               timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    # third-party packages from this environment; a plain path line, so the editable
    # install's own .pth finder there is not run and the wheel's tradesim is the one imported
    (Path(purelib.stdout.strip()) / "borrowed.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    checkpoint = str(ROOT / "tests" / "golden" / "qtnet_tiny.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from_wheel = _dry_run(python, elsewhere, checkpoint)
    from_checkout = _dry_run(sys.executable, elsewhere, checkpoint)
    assert Path(from_wheel["origin"]).is_relative_to(venv)
    assert Path(from_wheel["sample"]).is_relative_to(venv)  # the embedded sample ships too
    assert Path(from_checkout["origin"]).is_relative_to(ROOT)
    assert set(from_wheel["specs"]) == {p.stem for p in (ROOT / "agents").glob("*.toml")}
    assert from_wheel["specs"] == from_checkout["specs"]
