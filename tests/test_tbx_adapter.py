"""The tensorboardX adapter: the one place that touches tensorboardX's internals, and its version check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tensorboardX

import hf_summary
from hf_summary.events import tbx

# tensorboardX names that are not part of its public API, as they appear in source.
_PRIVATE = re.compile(r"_get_file_writer|\ball_writers\b|_write_to_disk|_filename_suffix|_default_metadata|_clean_tag|"
                      r"\bfrom tensorboardX\b|\bimport tensorboardX\b")


def test_tensorboardx_internals_are_used_only_in_the_adapter() -> None:
    package = Path(hf_summary.__file__).parent
    users = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if _PRIVATE.search(path.read_text()) and path.name != "tbx.py" and "testing" not in path.parts
    )
    assert users == []


def test_installed_version_is_a_tested_one() -> None:
    major, minor = (int(p) for p in tensorboardX.__version__.split(".")[:2])
    assert (major, minor) == (tbx.TESTED_MAJOR, tbx.TESTED_MINOR)


@pytest.mark.parametrize("version", ["3.0.0", "2.7.1", "1.9"])
def test_an_untested_version_fails_at_import_with_what_to_install(version: str) -> None:
    with pytest.raises(ImportError, match=r"tensorboardX 2\.6\.x and found .*pip install 'tensorboardX>=2\.6,<2\.7'"):
        tbx._check_version(version)
