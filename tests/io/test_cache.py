"""kzoo.io.cache: a value computed once and read back by later calls (later processes: no memory in between),
named by its inputs, its code and the versions given; an unreadable entry computed again and replaced;
processes asking for one entry at once compute it once."""

import json
import subprocess
import sys
import textwrap

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


def test_processes_asking_at_once_compute_an_entry_once(cache, tmp_path):
    """Three processes start together on one entry: one computes it (slowly), the others wait and read it."""
    code, marker = tmp_path / "code.py", tmp_path / "computes"
    code.write_text("v1")
    script = textwrap.dedent(f"""
        import json, time
        from kzoo.io.cache import disk_cached

        def compute():
            open({str(marker)!r}, "a").write("x")
            time.sleep(1.0)
            return "computed"

        assert disk_cached("kind", ("a",), compute, lambda v: json.dumps(v).encode(), json.loads,
                           source={str(code)!r}, versions=("1",)) == "computed"
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert marker.read_text() == "x"  # (computed by one of the three)
    assert cached(("a",), "other", code) == ("computed", False)
    assert len(list((cache / "kind").iterdir())) == 1
