"""``chargen completion bash|zsh|fish``: scripts generated from the real parser, which load in
their shell and complete commands, options and checkpoints."""

import shutil
import subprocess

import pytest

from tests.conftest import CHARGEN, subprocess_env

pytest.importorskip("shtab", reason="chargen completion needs the completion extra: pip install 'chargen[completion]'")


def script(shell: str) -> str:
    result = subprocess.run([str(CHARGEN), "completion", shell], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    return result.stdout


def bash(command: str, cwd=None) -> str:
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd,
                            env=subprocess_env(PATH=f"{CHARGEN.parent}:/usr/bin:/bin"))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_bash_script_loads():
    assert "chargen" in bash("source <(chargen completion bash); complete -p chargen")


def complete_in_bash(words: list[str], cwd) -> list[str]:
    """What bash offers for the last of ``words`` (the completion function called as bash would)."""
    line = " ".join(words)
    command = (f"source <(chargen completion bash); COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; "
               "$(complete -p chargen | sed 's/.*-F \\([^ ]*\\) .*/\\1/') chargen; printf '%s\\n' \"${COMPREPLY[@]}\"")
    return bash(command, cwd).split()


def test_bash_completes_commands_options_and_run_directories(tmp_path):
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert {"sample", "repl", "completion"} <= set(complete_in_bash(["chargen", ""], tmp_path))
    assert "--repetition-penalty" in complete_in_bash(["chargen", "sample", "--rep"], tmp_path)
    offered = complete_in_bash(["chargen", "sample", ""], tmp_path)
    assert "runs" in " ".join(offered) and "model.safetensors" in offered and "notes.txt" not in offered


def test_zsh_and_fish_scripts_are_generated_from_the_same_parser():
    zsh, fish = script("zsh"), script("fish")
    assert zsh.startswith("#compdef chargen") and "--no-repeat-ngram" in zsh
    assert "no-repeat-ngram" in fish and "complete -c chargen" in fish
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n"], input=zsh, text=True, check=True)
    if shutil.which("fish"):
        subprocess.run(["fish", "--no-execute"], input=fish, text=True, check=True)


def test_an_unknown_shell_is_one_line(cli, capsys):
    with pytest.raises(SystemExit) as info:
        cli("completion", "tcsh")
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "bash" in err


def test_without_shtab_the_error_names_the_extra(cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "shtab", None)  # as if the completion extra were not installed
    code, out, err = cli("completion", "bash")
    assert code == 2 and out == ""
    assert err == "chargen completion: error: needs shtab: pip install 'chargen[completion]'\n"
