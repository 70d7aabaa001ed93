"""`shards.atomic` on a full disk: the old file stays, no temporary is left, the error names the
file (a write or close that fails for lack of space carries no file name of its own)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from prep_fixture import run_prep, write_corpus

from shards import atomic


class FullDisk:
    """A file whose writes fail as on a disk with 0 bytes free (no file name in the error)."""

    def __init__(self, f) -> None:  # noqa: ANN001
        self.f = f

    def write(self, data) -> int:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.f, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    real = open
    monkeypatch.setattr(atomic, "open", lambda *a, **k: FullDisk(real(*a, **k)), raising=False)


def test_a_full_disk_error_names_the_file(tmp_path: Path, full_disk: None) -> None:
    target = tmp_path / "f.json"
    target.write_text("old\n")
    with pytest.raises(OSError) as e:
        atomic.write_text(target, "new\n")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert str(e.value) == f"[Errno 28] No space left on device: '{target}'"
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_prep_on_a_full_disk_names_the_file(tmp_path: Path, full_disk: None,
                                            capsys: pytest.CaptureFixture) -> None:
    recipe = write_corpus(tmp_path, {"alpha": 1}, files=1)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "1") == 1
    err = capsys.readouterr().err
    (work,) = out.glob(".prep-work-*")
    assert err == ("prep: error: [Errno 28] No space left on device: "
                   f"'{work / 'plan.json'}' (nothing was published)\n")
