"""Tools from Debian's packages on a machine with no package lists yet: the lists are fetched
(`apt-get update`) and the download tried again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import debian


def test_a_machine_without_package_lists_fetches_them_and_the_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)  # empty: as on a fresh image
    monkeypatch.setattr(debian, "TOOLS", tmp_path / "tools")
    tool = debian.debian_tool(
        "nginx", "usr/sbin/nginx", apt_options=(f"Dir::State::Lists={lists}",)
    )
    assert tool.is_file()
    assert any(lists.glob("*Packages*")), "the lists were fetched"
    shutil.rmtree(tmp_path / "tools")
