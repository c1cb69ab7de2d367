"""Paging out mapped weight files while the LLM loads: resident pages go, contents stay."""

from __future__ import annotations

import mmap
import os
import sys
import time

import pytest

from minigpt4.models.mapped_files import mapped_ranges, page_out, paging_out

SIZE = 32 * 1024 * 1024

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc only")


def mapping_rss(path: str) -> int:
    """Resident bytes of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) == 6 and fields[5] == path
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.fixture
def mapped(tmp_path):
    path = os.path.realpath(tmp_path / "shard.bin")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * (SIZE // 256))
    with open(path, "rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private, as safetensors maps
    yield path, view
    view.close()


def test_page_out_drops_resident_pages_and_keeps_contents(mapped):
    path, view = mapped
    view[0] = 7  # a copy-on-write page: anonymous from now on, and must survive
    assert sum(view[i + 1] for i in range(0, SIZE, 4096)) > 0  # touch every page
    assert mapped_ranges({path}) and mapping_rss(path) > SIZE // 2
    asked = page_out({path})
    if asked == 0:
        pytest.skip("madvise(MADV_PAGEOUT) refused here (Linux < 5.4)")
    assert mapping_rss(path) < SIZE // 4
    assert view[0] == 7 and view[1:256] == bytes(range(1, 256))
    assert view[SIZE - 256 :] == bytes(range(256))


def test_paging_out_runs_while_the_block_runs(mapped):
    path, view = mapped
    if page_out({path}) == 0 and mapped_ranges({path}):
        pytest.skip("madvise(MADV_PAGEOUT) refused here (Linux < 5.4)")
    with paging_out([path], every_s=0.01):
        assert sum(view[i + 1] for i in range(0, SIZE, 4096)) > 0
        deadline = time.monotonic() + 5
        while mapping_rss(path) >= SIZE // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mapping_rss(path) < SIZE // 4


def test_files_not_mapped_are_left_alone(tmp_path):
    assert mapped_ranges({str(tmp_path / "absent")}) == []
    assert page_out({str(tmp_path / "absent")}) == 0
