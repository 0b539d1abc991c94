"""utils.weights_files: one checksum format, one error class, one atomic folder write."""

import hashlib
import stat

import pytest

from utils import sae, toy_models, weights_files
from utils.weights_files import (
    CHECKSUM_FILE,
    WeightsChecksumError,
    atomic_folder,
    file_sha256,
    read_checksums,
    verify_checksums,
    write_checksums,
)


def _folder(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "b.bin").write_bytes(b"\x00\x01" * 1000)
    (folder / "a.json").write_text("{}\n")
    return folder


def test_one_error_class_for_every_weights_folder():
    assert toy_models.WeightsChecksumError is WeightsChecksumError
    assert sae.WeightsChecksumError is WeightsChecksumError
    assert sae.SUMS_FILE == toy_models.CHECKSUM_FILE == CHECKSUM_FILE


def test_write_read_verify_round_trip(tmp_path):
    folder = _folder(tmp_path)
    assert file_sha256(folder / "a.json") == hashlib.sha256(b"{}\n").hexdigest()
    write_checksums(folder)
    lines = (folder / CHECKSUM_FILE).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["a.json", "b.bin"]  # sorted, sha256sum
    assert read_checksums(folder) == {
        "a.json": file_sha256(folder / "a.json"), "b.bin": file_sha256(folder / "b.bin")}
    verify_checksums(folder, required=["b.bin"])
    (folder / "unlisted.txt").write_text("ignored")
    verify_checksums(folder)


def test_binary_mode_entries_are_accepted(tmp_path):
    folder = _folder(tmp_path)
    digest = file_sha256(folder / "b.bin")
    (folder / CHECKSUM_FILE).write_text(f"{digest} *b.bin\n\n")
    assert read_checksums(folder) == {"b.bin": digest}


@pytest.mark.parametrize("problem, match", [
    ("corrupt", r"b\.bin does not match its checksum .*sha256 .*git checkout -- .*retrain"),
    ("missing file", r"b\.bin is missing \(listed in SHA256SUMS\)"),
    ("missing sums", r"SHA256SUMS is missing"),
    ("malformed", r"line 1 is malformed"),
    ("unlisted required", r"no entry for c\.bin"),
])
def test_every_problem_names_the_file_and_the_fix(tmp_path, problem, match):
    folder = _folder(tmp_path)
    write_checksums(folder)
    required = ["c.bin"] if problem == "unlisted required" else []
    if problem == "corrupt":
        (folder / "b.bin").write_bytes(b"changed")
    elif problem == "missing file":
        (folder / "b.bin").unlink()
    elif problem == "missing sums":
        (folder / CHECKSUM_FILE).unlink()
    elif problem == "malformed":
        (folder / CHECKSUM_FILE).write_text("not a checksum line\n")
    with pytest.raises(WeightsChecksumError, match=match):
        verify_checksums(folder, required=required, rebuild_command="python -m x --retrain")


def test_atomic_folder_replaces_the_destination_readable_by_everyone(tmp_path):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    with atomic_folder(destination) as tmp:
        assert tmp.parent == tmp_path and tmp != destination
        (tmp / "new.txt").write_text("new")
        (tmp / "new.txt").chmod(0o600)  # as safetensors writes
        assert (destination / "old.txt").is_file()  # untouched until the block ends
    assert sorted(p.name for p in destination.iterdir()) == ["new.txt"]
    assert (destination / "new.txt").stat().st_mode & stat.S_IROTH
    assert destination.stat().st_mode & stat.S_IXOTH
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary or old folder left


def test_atomic_folder_leaves_the_destination_alone_on_error(tmp_path):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_folder(destination) as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert [p.name for p in destination.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_package_version():
    assert weights_files.package_version("torch").split(".")[0].isdigit()
    assert weights_files.package_version("no-such-distribution-anywhere") == "unknown"
