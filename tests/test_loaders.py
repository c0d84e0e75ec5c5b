import pytest

from rag.errors import InputRefused
from rag.loaders import discover, load


def test_empty_file_is_refused_with_its_name(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("")
    with pytest.raises(InputRefused) as e:
        load(p)
    assert str(p) in str(e.value) and "empty" in str(e.value)


def test_binary_with_txt_name_is_refused(tmp_path):
    p = tmp_path / "data.txt"
    p.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(InputRefused, match="binary"):
        load(p)


def test_latin1_text_is_decoded(tmp_path):
    p = tmp_path / "old.txt"
    p.write_bytes("Caf\u00e9 cr\u00e8me in S\u00e3o Paulo, na\u00efve d\u00e9j\u00e0 vu. "
                  .encode("latin-1") * 5)
    doc = load(p)
    assert "Caf\u00e9" in doc.text


def test_markdown_title_from_heading(tmp_path):
    p = tmp_path / "note.md"
    p.write_text("\n# Quarterly report\n\nRevenue rose.\n")
    assert load(p).title == "Quarterly report"


def test_discover_recurses_and_names_what_it_refuses(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.md").write_text("deep")
    (tmp_path / "a" / "top.txt").write_text("top")
    (tmp_path / "a" / "skip.bin").write_text("x")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    found, refused = discover([tmp_path / "a", tmp_path / "image.png", tmp_path / "nope"])
    assert [p.name for p in found] == ["deep.md", "top.txt"]
    reasons = {r.path: r.reason for r in refused}
    assert "unsupported file type" in reasons[str(tmp_path / "image.png")]
    assert reasons[str(tmp_path / "nope")] == "no such file or folder"
