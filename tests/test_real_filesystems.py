"""Full disks and read-only filesystems for real: a tmpfs of 2 MB, filled up or remounted read-only.

The crash tests inject these faults into ``chargen.fileio``; here the kernel says no, to the real
CLI, at whatever point it happens to. Each case checks what a user relies on: one clear line on
stderr and exit code 2, the previous checkpoint (or output) byte-identical, no temp files left,
and the run resumable once space is freed.

Mounting needs root (CAP_SYS_ADMIN); where it is refused these tests skip, saying why, and the
injection tests still cover the cases.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open

from chargen.checkpoint import BEST_NAME, LAST_NAME
from chargen.training import read_metrics
from tests.conftest import assert_bit_identical, make_text

DISK_SIZE = "2m"
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs counts whole pages
# Tiny, exact runs: one thread (conftest), fp32, dropout on so that resume must restore the RNGs.
OPTIONS = ["--layers", "1", "--hidden", "32", "--seq-len", "16", "--batch-size", "8", "--device", "cpu",
           "--precision", "fp32", "--seed", "0", "--warmup-steps", "5", "--dropout", "0.2", "--eval-every", "10",
           "--preview-length", "0", "--save-every", "off", "--plain"]
STEPS = ["--max-steps", "20"]


def mount(*args: str) -> str | None:
    """Run ``mount ARGS``; the reason it failed, or None."""
    try:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or f"exit code {result.returncode}")


@pytest.fixture
def disk(tmp_path, request) -> Path:
    """A fresh 2 MB tmpfs mounted at tmp_path/disk, unmounted when the test ends, whatever happens."""
    path = tmp_path / "disk"
    path.mkdir()
    refused = mount("-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(path))
    if refused:
        pytest.skip(f"cannot mount a tmpfs here ({' '.join(refused.split())}): needs root (CAP_SYS_ADMIN); "
                    "the fault-injection tests cover these cases")

    def unmount():
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it anyway
    request.addfinalizer(unmount)
    return path


def remount(disk: Path, mode: str) -> None:
    refused = mount("-o", f"remount,{mode}", str(disk))
    if refused:
        pytest.skip(f"cannot remount the tmpfs {mode} ({' '.join(refused.split())})")


def free_bytes(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


def pages(n: int) -> int:
    """Bytes a file of ``n`` bytes takes on the tmpfs."""
    return -(-n // PAGE) * PAGE


def leave_free(disk: Path, nbytes: int) -> Path:
    """Fill the disk with a file so that only ``nbytes`` (rounded down to pages) stay free."""
    filler = disk / "filler"
    size = free_bytes(disk) - nbytes // PAGE * PAGE
    assert size > 0, f"the {DISK_SIZE} disk has not {nbytes} bytes free to start with"
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    assert free_bytes(disk) == nbytes // PAGE * PAGE
    return filler


def saved_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["chargen"])["summary"]["step"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.name != ".lock"}


def temp_files(disk: Path) -> list[Path]:
    """Temp files of chargen's writes: ``.NAME.tmpPID`` (atomic writes) and ``NAME.tmpPID`` (token cache)."""
    return sorted(disk.rglob("*.tmp*"))


def one_clear_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"want one line on stderr, got: {err!r}"
    line = lines[0]
    assert line.startswith("chargen ") and ": error: " in line and "Traceback" not in line, line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.fixture
def corpus(tiny_corpus) -> Path:
    """Outside the small disk (conftest's, in tmp_path): only what chargen writes goes there."""
    return tiny_corpus


@pytest.fixture
def straight(cli, corpus, tmp_path) -> Path:
    """The same run on a roomy disk, never stopped: its sizes size the small disk, its weights are
    what every resumed run must end with."""
    run = tmp_path / "roomy" / "run"
    assert cli("train", corpus, "--out", run, *OPTIONS, *STEPS)[0] == 0
    return run


def test_train_that_fills_the_disk_mid_save_keeps_the_previous_checkpoint(cli, corpus, straight, disk):
    # Room for everything the first evaluation writes, and half of the next last.safetensors.
    cache = straight.parent / ".cache"
    first = sum(pages(p.stat().st_size) for p in [*cache.iterdir(), straight / LAST_NAME, straight / BEST_NAME])
    last_size = pages((straight / LAST_NAME).stat().st_size)
    filler = leave_free(disk, first + 3 * PAGE + last_size // 2)  # + metrics, lock, index slack
    run = disk / "runs" / "run"

    code, _, err = cli("train", corpus, "--out", run, *OPTIONS, *STEPS)

    assert code == 2
    one_clear_line(err, str(run / LAST_NAME), "No space left on device", f"chargen train --resume {run}")
    assert saved_step(run / LAST_NAME) == 10  # the first evaluation's, intact
    assert temp_files(disk) == []
    filler.unlink()
    code, _, err = cli("train", "--resume", run)
    assert code == 0, err
    assert saved_step(run / LAST_NAME) == 20
    assert_bit_identical(run / LAST_NAME, straight / LAST_NAME)
    train_steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "train_loss" in r]
    assert train_steps == [10, 20]  # each step once: what was logged past the checkpoint was dropped


def test_resume_into_a_full_disk_leaves_every_file_byte_identical(cli, corpus, straight, disk):
    run = disk / "runs" / "run"
    assert cli("train", corpus, "--out", run, *OPTIONS, "--max-steps", "10")[0] == 0
    before = snapshot(run)
    filler = leave_free(disk, pages((run / LAST_NAME).stat().st_size) // 2)

    code, _, err = cli("train", "--resume", run, *STEPS)

    assert code == 2
    one_clear_line(err, "No space left on device", f"chargen train --resume {run}")
    after = snapshot(run)
    assert after[LAST_NAME] == before[LAST_NAME] and after[BEST_NAME] == before[BEST_NAME]
    assert temp_files(disk) == []
    filler.unlink()
    code, _, err = cli("train", "--resume", run, *STEPS)
    assert code == 0, err
    assert saved_step(run / LAST_NAME) == 20
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r] == [10, 20]


def test_resume_into_a_read_only_disk_is_one_line_and_touches_nothing(cli, corpus, disk):
    run = disk / "runs" / "run"
    assert cli("train", corpus, "--out", run, *OPTIONS, "--max-steps", "10")[0] == 0
    before = snapshot(run)
    remount(disk, "ro")

    code, _, err = cli("train", "--resume", run, *STEPS)

    assert code == 2
    one_clear_line(err, f"--resume {run}", "not writable")
    assert snapshot(run) == before
    remount(disk, "rw")
    assert temp_files(disk) == []
    code, _, err = cli("train", "--resume", run, *STEPS)
    assert code == 0, err
    assert saved_step(run / LAST_NAME) == 20


def test_sample_out_into_a_full_disk_keeps_the_old_file(cli, tiny_run, disk):
    out = disk / "samples.txt"
    out.write_text("the old samples\n")
    filler = leave_free(disk, 0)

    code, _, err = cli("sample", tiny_run, "--length", "200", "--seed", "1", "--out", out)

    assert code == 2
    one_clear_line(err, str(out), "No space left on device")
    assert out.read_text() == "the old samples\n"
    assert temp_files(disk) == []
    filler.unlink()
    code, _, err = cli("sample", tiny_run, "--length", "200", "--seed", "1", "--out", out)
    assert code == 0, err
    assert out.read_text() != "the old samples\n" and len(out.read_text()) > 100


@pytest.mark.parametrize("room", [0, 2 * PAGE], ids=["nothing-free", "room-for-the-index-only"])
def test_token_cache_on_a_full_disk_is_one_line_and_leaves_no_temp_files(cli, tmp_path, disk, room):
    big = tmp_path / "big.txt"
    big.write_text(make_text(4000), encoding="utf-8")  # ~150 KB of tokens: more than the room left
    filler = leave_free(disk, room)
    run = disk / "runs" / "run"

    code, _, err = cli("train", big, "--out", run, *OPTIONS, "--max-steps", "10")

    assert code == 2
    one_clear_line(err, "token cache", "No space left on device")
    assert temp_files(disk) == []
    assert not (run / LAST_NAME).exists()
    filler.unlink()
    code, _, err = cli("train", big, "--out", run, *OPTIONS, "--max-steps", "10")
    assert code == 0, err
    assert saved_step(run / LAST_NAME) == 10
    assert any(p.suffix == ".tokens" for p in (disk / "runs" / ".cache").iterdir())


def test_mounting_is_really_a_small_disk(disk):
    """The cases above mean something only if the disk really runs out: a bigger write must fail."""
    with pytest.raises(OSError, match="No space left"):
        (disk / "big").write_bytes(b"\0" * (3 << 20))
    (disk / "big").unlink(missing_ok=True)
