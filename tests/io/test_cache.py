"""kzoo.io.cache: a value computed once and read back by later calls (later processes: no memory in between),
named by its inputs, its code and the versions given; an unreadable entry computed again and replaced."""

import json

import pytest

from kzoo.io.cache import cache_dir, disk_cached


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("KZOO_NO_CACHE", raising=False)
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cached(parts, value, source, versions=("1",)):
    """(what disk_cached returns, whether it computed it)."""
    computed = []

    def compute():
        computed.append(True)
        return value

    got = disk_cached("kind", parts, compute, lambda v: json.dumps(v).encode(), json.loads, source=str(source),
                      versions=versions)
    return got, bool(computed)


def test_a_value_is_read_back_under_its_inputs_code_and_versions(cache, tmp_path):
    code = tmp_path / "code.py"
    code.write_text("v1")
    assert cached((b"spec", "x"), [1, 2], code) == ([1, 2], True)
    assert cached((b"spec", "x"), [9], code) == ([1, 2], False)  # read, not computed
    assert cached((b"spec", "y"), [3], code) == ([3], True)  # other inputs
    assert cached((b"spec", "x"), [4], code, versions=("2",)) == ([4], True)  # another library version
    code.write_text("v2")
    assert cached((b"spec", "x"), [5], code) == ([5], True)  # other code
    assert len(list((cache / "kind").iterdir())) == 4


def test_an_unreadable_entry_is_computed_again_and_replaced(cache, tmp_path):
    code = tmp_path / "code.py"
    code.write_text("v1")
    cached(("a",), {"v": 1}, code)
    (entry,) = (cache / "kind").iterdir()
    entry.write_bytes(b"not zlib")
    assert cached(("a",), {"v": 2}, code) == ({"v": 2}, True)
    assert cached(("a",), {"v": 3}, code) == ({"v": 2}, False)


def test_no_cache_and_an_unwritable_one(tmp_path, monkeypatch):
    code = tmp_path / "code.py"
    code.write_text("v1")
    monkeypatch.setenv("KZOO_NO_CACHE", "1")
    assert cache_dir() is None and cached(("a",), 1, code) == (1, True) and cached(("a",), 2, code) == (2, True)
    monkeypatch.delenv("KZOO_NO_CACHE")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with pytest.warns(UserWarning, match="cache was not written.*KZOO_NO_CACHE"):
        assert cached(("a",), 3, code) == (3, True)
    monkeypatch.delenv("KZOO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "kzoo"
