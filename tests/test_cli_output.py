"""What `internseg` prints is ours: no library warning before (or after) a command's output,
a whole sentence in `--help`, the release in `--version`."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from internseg import __version__
from internseg.cli import build_parser

# how Python prints a warning: "<file>:<line>: UserWarning: <message>"
WARNING_LINE = re.compile(r"\b\w*Warning: ")


def run(*words: str) -> subprocess.CompletedProcess:
    """A fresh interpreter, as a rule starts it, with Python's default warning filters."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(REPO / "core")
    return subprocess.run([sys.executable, "-c", *words], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def warning_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines()
            if WARNING_LINE.search(line)]


def test_every_subcommands_help_prints_no_warning():
    names = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"train", "test", "inspect", "prepare", "download", "aggregate"} <= set(names)
    # one interpreter for all: a warning from any import, once, is in its output
    result = run("import sys; from internseg.cli import main\n"
                 f"for name in {names!r} + [None]:\n"
                 "    try:\n"
                 "        main([name, '--help'] if name else ['--help'])\n"
                 "    except SystemExit as end:\n"
                 "        assert end.code == 0, (name, end.code)\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert warning_lines(result) == []
    assert result.stdout.count("usage: internseg") == len(names) + 1


@pytest.mark.parametrize("command", [
    ["records"],
    ["plan", "--preset", "demo"],
    # builds the model: mmcv's deformable-attention import and mmseg's loss both warned here
    ["inspect", "demo/adapter_tuning", "--dataset", "coco_stuff164k"],
], ids=lambda words: words[0])
def test_a_short_command_prints_no_warning(command):
    result = run(f"import sys; from internseg.cli import main; sys.exit(main({command!r}))")
    assert result.returncode == 0, result.stderr[-2000:]
    assert warning_lines(result) == [], warning_lines(result)
    assert result.stdout.strip()


def test_only_the_two_known_warnings_are_filtered():
    """Filtered by their exact message: another warning from the same libraries still shows."""
    result = run("import warnings, internseg\n"
                 "warnings.warn('Default ``avg_non_ignore`` is False, and more')\n"
                 "warnings.warn('Fail to import ``MultiScaleDeformableAttention`` from elsewhere')")
    assert len(warning_lines(result)) == 2


def test_help_says_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert " ".join(description.split()).endswith(
        "and the one handler that turns an expected problem into one line (exit 2).")


def test_version_is_the_release(capsys):
    with pytest.raises(SystemExit) as end:
        build_parser().parse_args(["--version"])
    assert end.value.code == 0
    assert capsys.readouterr().out.strip() == f"internseg {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    # the changelog has a section for it
    assert f"## {__version__}" in (REPO / "CHANGELOG.md").read_text()
