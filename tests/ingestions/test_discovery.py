"""Source discovery: which files a checked source holds, with their sizes and times."""

import os
from datetime import UTC, datetime

import pytest

from ingestions.errors import (
    SourceListingLimitError,
    SourceNotAllowedError,
    SourceUnavailableError,
)
from ingestions.locations import ConfinedLocalFileSystem
from ingestions.sources import SourceFile, list_source_files


def write_files(root, files: dict[str, bytes]) -> None:
    for relative_path, content in files.items():
        path = root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def paths(source_files: list[SourceFile]) -> list[str]:
    return [source_file.path for source_file in source_files]


def test_lists_files_recursively_sorted_by_relative_path(source_dir, open_source):
    write_files(
        source_dir,
        {
            "2024-01-02/b.csv": b"x\n1\n",
            "2024-01-01/deeper/a.csv": b"x\n1\n",
            "top.csv": b"x\n1\n",
        },
    )

    found = list_source_files(source=open_source())

    assert paths(found) == ["2024-01-01/deeper/a.csv", "2024-01-02/b.csv", "top.csv"]


def test_pattern_matches_nested_files_by_basename(source_dir, open_source):
    write_files(source_dir, {"a.csv": b"", "day/b.csv": b"", "day/c.json": b""})

    found = list_source_files(source=open_source(), pattern="*.csv")

    assert paths(found) == ["a.csv", "day/b.csv"]


def test_pattern_matches_the_relative_path(source_dir, open_source):
    write_files(source_dir, {"2024-01/a.csv": b"", "2025-01/b.csv": b"", "2024.csv": b""})

    found = list_source_files(source=open_source(), pattern="2024-*/*.csv")

    assert paths(found) == ["2024-01/a.csv"]


def test_hidden_files_and_directories_are_skipped(source_dir, open_source):
    write_files(
        source_dir,
        {
            "visible.csv": b"",
            ".hidden.csv": b"",
            "_SUCCESS": b"",
            "day/.part-0.csv": b"",
            ".staging/inside.csv": b"",
            "_temporary/0/inside.csv": b"",
            "day/kept.csv": b"",
        },
    )

    found = list_source_files(source=open_source())

    assert paths(found) == ["day/kept.csv", "visible.csv"]


def test_reports_size_in_bytes_and_utc_modification_time(source_dir, open_source):
    write_files(source_dir, {"data.csv": b"a,b\n1,2\n"})
    modified_at = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    os.utime(source_dir / "data.csv", (modified_at.timestamp(), modified_at.timestamp()))

    [found] = list_source_files(source=open_source())

    assert found.size_bytes == 8
    assert found.modified_at == modified_at
    assert found.modified_at.tzinfo is not None


def test_file_uri_and_plain_path_list_the_same_files(source_dir, open_source):
    write_files(source_dir, {"a.csv": b"1", "day/b.csv": b"22"})

    from_uri = list_source_files(source=open_source(source_dir.as_uri()))
    from_path = list_source_files(source=open_source(str(source_dir)))
    from_path_with_slash = list_source_files(source=open_source(f"{source_dir}/"))

    assert from_uri == from_path == from_path_with_slash
    assert paths(from_uri) == ["a.csv", "day/b.csv"]


def test_source_open_returns_filesystem_and_root(source_dir, open_source):
    source = open_source(source_dir.as_uri() + "/")

    write_files(source_dir, {"a.csv": b"id\n1\n"})

    assert source.root == str(source_dir)
    assert isinstance(source.filesystem, ConfinedLocalFileSystem)
    assert source.filesystem.boundary == str(source_dir) + "/"
    with source.filesystem.open_input_file(source.full_path("a.csv")) as opened:
        assert opened.read() == b"id\n1\n"


def test_missing_root_raises_source_unavailable(source_dir, open_source):
    missing = source_dir / "nope"

    with pytest.raises(SourceUnavailableError, match="does not exist") as raised:
        list_source_files(source=open_source(str(missing)))

    assert str(missing) in str(raised.value)
    assert raised.value.error_code == "SOURCE_UNAVAILABLE"


def test_root_that_is_a_file_raises_source_unavailable(source_dir, open_source):
    write_files(source_dir, {"file.csv": b""})

    with pytest.raises(SourceUnavailableError, match="not a directory"):
        list_source_files(source=open_source(str(source_dir / "file.csv")))


@pytest.mark.parametrize("uri", ["relative/path", "nosuchscheme://bucket/prefix"])
def test_unusable_uri_is_refused_before_anything_is_listed(uri, open_source):
    with pytest.raises(SourceNotAllowedError, match="supported") as raised:
        open_source(uri)

    assert raised.value.error_code == "SOURCE_NOT_ALLOWED"


def test_unreadable_root_raises_source_unavailable(source_dir, open_source):
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    locked = source_dir / "locked"
    write_files(locked, {"a.csv": b""})
    locked.chmod(0)
    try:
        with pytest.raises(SourceUnavailableError, match="Cannot list source"):
            list_source_files(source=open_source(str(locked)))
    finally:
        locked.chmod(0o700)


def test_empty_directory_lists_nothing(source_dir, open_source):
    assert list_source_files(source=open_source()) == []


def test_the_listing_bound_counts_files_not_folders(source_dir, open_source, settings):
    """Issue 23: AUTOLOADER_LISTING_MAX_ENTRIES files in nested folders are listed (the
    folders and hidden files do not count against it); one file more is refused."""
    settings.AUTOLOADER_LISTING_MAX_ENTRIES = 6
    for folder in ("a", "a/b", "c"):
        write_files(source_dir / folder, {"1.csv": b"x", "2.csv": b"x", ".hidden": b""})

    assert len(list_source_files(source=open_source())) == 6

    write_files(source_dir, {"one-more.csv": b"x"})
    with pytest.raises(SourceListingLimitError, match="more than 6 files"):
        list_source_files(source=open_source())


def test_a_tree_of_empty_folders_still_ends(source_dir, open_source, settings):
    settings.AUTOLOADER_LISTING_MAX_ENTRIES = 5
    for index in range(25):  # 25 folders, no file: past 4 entries per allowed file
        (source_dir / f"empty-{index}").mkdir()

    with pytest.raises(SourceListingLimitError, match="more than 20 entries"):
        list_source_files(source=open_source())


def test_the_collector_is_paused_for_a_listing_and_restored_as_it_was_found():
    """`collector_paused`: off inside, back on after (an error included), and left off
    when it was off already (another pause, or the process's own choice)."""
    import gc

    from ingestions.sources.discovery import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a listing that failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
