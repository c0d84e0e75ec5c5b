import json
import os

import pytest

from rag.chunking import chunk_document
from rag.discovery import discover
from rag.errors import InputRefused
from rag.loaders import MAX_TEXT_BYTES, load, load_all
from rag.types import Citation

from .make_docs import (
    docx_bytes,
    encrypted_pdf_bytes,
    html_page,
    jsonl_lines,
    make_symlink_loops,
    pdf_bytes,
    zip_bomb_docx,
)


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


# -- formats ---------------------------------------------------------------------------------

def _count(texts):
    return [len(t.split()) for t in texts]


def test_pdf_text_keeps_its_pages(tmp_path):
    p = tmp_path / "report.pdf"
    p.write_bytes(pdf_bytes(["Revenue rose in spring.\nCosts fell.", "",
                             "The budget was 15,000 dollars."], title="Annual report"))
    doc = load(p)
    assert doc.title == "Annual report"
    assert len(doc.pages) == 3
    assert doc.text[doc.pages[2]:].strip() == "The budget was 15,000 dollars."
    assert doc.page_at(doc.text.index("Costs")) == 1
    assert doc.page_at(doc.text.index("budget")) == 3
    chunks = chunk_document(doc, _count, max_tokens=100)
    assert [c.page for c in chunks] == [1, 3]  # never across a page, even when it would fit
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        assert c.chunk_id.startswith(doc.sha256[:12]) and f"-p{c.page}-" in c.chunk_id
    cite = Citation(1, doc.source, chunks[1].chunk_id, "The budget was 15,000 dollars.",
                    chunks[1].start, chunks[1].end)
    assert cite.as_json()["page"] == 3


def test_text_citation_json_has_no_page():
    assert "page" not in Citation(1, "a.txt", "0123456789ab-0000", "x", 0, 1).as_json()


def test_pdf_locked_only_against_editing_opens(tmp_path):
    p = tmp_path / "locked.pdf"
    p.write_bytes(encrypted_pdf_bytes(["Readable without a password."], "", "owner-secret"))
    assert load(p).text == "Readable without a password."


def test_pdf_needing_a_password_is_refused(tmp_path):
    p = tmp_path / "secret.pdf"
    p.write_bytes(encrypted_pdf_bytes(["Hidden."], "user-secret", "owner-secret"))
    with pytest.raises(InputRefused, match="encrypted PDF that needs a password"):
        load(p)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a pdf at all"])
def test_corrupt_pdf_is_refused(tmp_path, damage):
    good = pdf_bytes(["Some text here."])
    data = {"truncated": good[:len(good) // 3], "garbage": b"%PDF-1.7\n" + os.urandom(4000),
            "not a pdf at all": b"hello, I am plain text"}[damage]
    p = tmp_path / "bad.pdf"
    p.write_bytes(data)
    with pytest.raises(InputRefused, match="PDF"):
        load(p)


def test_pdf_without_text_layer_is_refused_with_the_fix(tmp_path):
    p = tmp_path / "scan.pdf"
    p.write_bytes(pdf_bytes(["", ""]))
    with pytest.raises(InputRefused, match="OCR"):
        load(p)


def test_html_main_text_without_scripts_navigation_or_footer(tmp_path):
    p = tmp_path / "page.html"
    p.write_text(html_page("Quarterly news", ["Sales <b>rose</b> by <a href='#'>ten</a> "
                                              "percent.", "Staff grew &amp; stayed."]))
    doc = load(p)
    assert doc.title == "Quarterly news"
    assert "Sales rose by ten percent." in doc.text.splitlines()
    assert "Staff grew & stayed." in doc.text
    for noise in ("tracking", "Home", "Site banner", "Copyright", "color: red"):
        assert noise not in doc.text


def test_html_in_a_legacy_encoding(tmp_path):
    p = tmp_path / "old.htm"
    p.write_bytes("<html><head><meta charset='windows-1252'><title>Caf\u00e9</title></head>"
                  "<body><p>Cr\u00e8me br\u00fbl\u00e9e \u2013 \u201cquoted\u201d.</p>"
                  "</body></html>".encode("cp1252"))
    doc = load(p)
    assert "Cr\u00e8me br\u00fbl\u00e9e \u2013 \u201cquoted\u201d." in doc.text


def test_docx_paragraphs_and_tables_in_order(tmp_path):
    p = tmp_path / "memo.docx"
    p.write_bytes(docx_bytes(["Budget memo.", "Spending is on plan."],
                             table=[["Item", "Cost"], ["Fuel", "1,200"]], title="Memo"))
    doc = load(p)
    assert doc.title == "Memo"
    assert doc.text == "Budget memo.\nSpending is on plan.\nItem | Cost\nFuel | 1,200"


def test_docx_that_is_not_a_zip_is_refused(tmp_path):
    p = tmp_path / "fake.docx"
    p.write_text("I was renamed from .txt")
    with pytest.raises(InputRefused, match="not a zip"):
        load(p)


def test_zip_bomb_docx_is_refused_before_unpacking(tmp_path):
    p = tmp_path / "bomb.docx"
    zip_bomb_docx(p, unpacked_bytes=300 * 2**20)
    assert p.stat().st_size < 2 * 2**20
    with pytest.raises(InputRefused, match="zip bomb"):
        load(p)


def test_jsonl_records_are_documents_and_bad_records_are_named(tmp_path):
    p = tmp_path / "export.jsonl"
    p.write_text(jsonl_lines([
        {"id": "a1", "text": "First record.", "title": "One", "url": "https://example.org/1",
         "metadata": {"author": "Kim"}},
        {"text": "A record without an id."},
        "",
        "{not json",
        {"id": "a1", "text": "Same id again."},
        {"id": "x", "body": "no text field"},
        [1, 2],
        {"id": "e", "text": "   "},
    ]))
    items = list(load_all(p))
    docs = [i for i in items if not isinstance(i, InputRefused)]
    refused = {i.path: i.reason for i in items if isinstance(i, InputRefused)}
    assert [d.source for d in docs] == [f"{p}#a1", f"{p}#2"]
    assert docs[0].title == "One" and docs[0].url == "https://example.org/1"
    assert docs[0].metadata == {"author": "Kim"} and docs[0].origin == str(p)
    assert docs[1].title == "A record without an id."
    assert refused == {
        f"{p}:4": refused[f"{p}:4"],
        f"{p}:5": "duplicate id 'a1' (first on line 1)",
        f"{p}:6": 'no "text" field holding a string',
        f"{p}:7": "not a JSON object",
        f"{p}:8": 'empty "text"',
    }
    assert refused[f"{p}:4"].startswith("not valid JSON")
    assert docs[0].sha256 != docs[1].sha256


def test_jsonl_record_changes_only_its_own_hash(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(jsonl_lines([{"id": 1, "text": "one"}, {"id": 2, "text": "two"}]))
    before = {d.source: d.sha256 for d in load_all(p)}
    p.write_text(jsonl_lines([{"id": 1, "text": "one"}, {"id": 2, "text": "two, edited"}]))
    after = {d.source: d.sha256 for d in load_all(p)}
    assert before[f"{p}#1"] == after[f"{p}#1"] and before[f"{p}#2"] != after[f"{p}#2"]


def test_empty_jsonl_is_refused(tmp_path):
    p = tmp_path / "none.jsonl"
    p.write_text("\n\n")
    assert [(r.path, r.reason) for r in load_all(p)] == [(str(p), "empty file")]


# -- encodings -------------------------------------------------------------------------------

TEXT = ("The committee met on Tuesday. Its members agreed on a budget of 15,000 euros, "
        "and the chair thanked everyone for coming. ")


@pytest.mark.parametrize("encoding,sample", [
    ("cp1252", "Na\u00efve caf\u00e9 \u201cquotes\u201d \u2013 r\u00e9sum\u00e9. "),
    ("latin-1", "S\u00e3o Paulo, Z\u00fcrich, K\u00f8benhavn. "),
    ("utf-16", "Multilingual: \u65e5\u672c\u8a9e, \u0440\u0443\u0441\u0441\u043a\u0438\u0439. "),
    ("utf-16-le", "No byte-order mark here. "),
    ("utf-8-sig", "UTF-8 with a mark: \u00e9\u00e8. "),
])
def test_text_in_common_encodings(tmp_path, encoding, sample):
    text = (TEXT + sample) * 20
    p = tmp_path / "doc.txt"
    p.write_bytes(text.encode(encoding))
    assert load(p).text == text


RUSSIAN = ("\u041a\u043e\u043c\u0438\u0442\u0435\u0442 \u0441\u043e\u0431\u0440\u0430"
           "\u043b\u0441\u044f \u0432\u043e \u0432\u0442\u043e\u0440\u043d\u0438\u043a. "
           "\u0427\u043b\u0435\u043d\u044b \u0441\u043e\u0433\u043b\u0430\u0441\u043e"
           "\u0432\u0430\u043b\u0438 \u0431\u044e\u0434\u0436\u0435\u0442, \u0430 "
           "\u043f\u0440\u0435\u0434\u0441\u0435\u0434\u0430\u0442\u0435\u043b\u044c "
           "\u043f\u043e\u0431\u043b\u0430\u0433\u043e\u0434\u0430\u0440\u0438\u043b "
           "\u0432\u0441\u0435\u0445. ")
JAPANESE = ("\u59d4\u54e1\u4f1a\u306f\u706b\u66dc\u65e5\u306b\u958b\u304b\u308c\u307e"
            "\u3057\u305f\u3002\u59d4\u54e1\u306f\u4e88\u7b97\u306b\u5408\u610f\u3057"
            "\u3001\u8b70\u9577\u306f\u51fa\u5e2d\u8005\u306b\u611f\u8b1d\u3057\u307e"
            "\u3057\u305f\u3002")


@pytest.mark.parametrize("encoding,text", [
    ("koi8-r", RUSSIAN), ("cp1251", RUSSIAN), ("shift_jis", JAPANESE), ("gb18030", JAPANESE),
])
def test_text_in_national_encodings(tmp_path, encoding, text):
    text = text * 10
    p = tmp_path / "doc.txt"
    p.write_bytes(text.encode(encoding))
    assert load(p).text == text


def test_random_bytes_without_nul_are_refused_as_binary(tmp_path):
    data = bytes(b for b in os.urandom(20000) if b)
    p = tmp_path / "noise.md"
    p.write_bytes(data)
    with pytest.raises(InputRefused, match="binary"):
        load(p)


def test_stray_nul_deep_in_text_becomes_replacement_char_keeping_offsets(tmp_path):
    p = tmp_path / "nul.txt"
    data = b"Plain text for a while. " * 500 + b"A stray \x00 NUL. " + b"More text. " * 50
    p.write_bytes(data)
    doc = load(p)
    assert "\x00" not in doc.text and len(doc.text) == len(data)
    assert doc.text[data.index(b"\x00")] == "\ufffd"


def test_nul_near_the_start_means_binary(tmp_path):
    p = tmp_path / "nul.txt"
    p.write_bytes(b"Before a stray NUL \x00 after it. " * 50)
    with pytest.raises(InputRefused, match="binary"):
        load(p)


# -- files that are not what they seem -------------------------------------------------------

def test_fifo_named_txt_is_refused_without_waiting(tmp_path):
    p = tmp_path / "pipe.txt"
    os.mkfifo(p)
    with pytest.raises(InputRefused, match="not a regular file"):
        load(p)


def test_device_behind_a_txt_symlink_is_refused(tmp_path):
    p = tmp_path / "zeros.txt"
    os.symlink("/dev/zero", p)
    with pytest.raises(InputRefused, match="not a regular file"):
        load(p)


def test_oversized_text_is_refused_before_reading(tmp_path):
    p = tmp_path / "huge.txt"
    with open(p, "wb") as f:  # sparse: takes no disk, would take memory if read
        f.truncate(MAX_TEXT_BYTES + 1)
    with pytest.raises(InputRefused, match="over the 32 MB limit"):
        load(p)


def test_file_deleted_while_being_read(tmp_path, monkeypatch):
    p = tmp_path / "going.txt"
    p.write_text("A sentence that was there when reading began. " * 100)
    real_read = os.read

    def read_then_delete(fd, n):
        block = real_read(fd, n)
        if p.exists():
            p.unlink()
        return block

    monkeypatch.setattr(os, "read", read_then_delete)
    with pytest.raises(InputRefused, match="deleted while being read"):
        load(p)


def test_file_changed_while_being_read(tmp_path, monkeypatch):
    p = tmp_path / "growing.txt"
    p.write_text("First version. " * 100)
    real_read = os.read

    appended = []

    def read_then_append(fd, n):
        block = real_read(fd, n)
        if not appended:
            appended.append(True)
            with open(p, "a") as f:
                f.write("More.")
        return block

    monkeypatch.setattr(os, "read", read_then_append)
    with pytest.raises(InputRefused, match="changed while being read"):
        load(p)


def test_symlink_loops_are_named_and_never_followed_forever(tmp_path):
    (tmp_path / "real.txt").write_text("Real content.")
    make_symlink_loops(tmp_path)
    os.symlink("missing.txt", tmp_path / "dangling.txt")
    found, refused = discover([tmp_path, tmp_path / "self.txt"])
    assert found == [tmp_path / "real.txt"]
    reasons = {r.path: r.reason for r in refused}
    assert reasons[str(tmp_path / "self.txt")] == "symlink loop"
    assert reasons[str(tmp_path / "ping.md")] == "symlink loop"
    assert reasons[str(tmp_path / "pong.md")] == "symlink loop"
    assert reasons[str(tmp_path / "sub" / "back_up")].startswith("symlink loop: leads back to")
    assert "broken symlink" in reasons[str(tmp_path / "dangling.txt")]


def test_symlinked_folder_is_followed_once(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "a.txt").write_text("Shared.")
    (tmp_path / "docs").mkdir()
    os.symlink(tmp_path / "shared", tmp_path / "docs" / "link1")
    os.symlink(tmp_path / "shared", tmp_path / "docs" / "link2")
    found, refused = discover([tmp_path / "docs"])
    assert found == [tmp_path / "shared" / "a.txt"] and refused == []


def test_refusal_reasons_are_one_line(tmp_path):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4\n" + b"\n".join([b"junk"] * 50))
    for r in load_all(tmp_path / "bad.pdf"):
        assert isinstance(r, InputRefused) and "\n" not in r.reason
    assert json.dumps(r.reason)


def test_other_json_lines_in_a_folder_are_not_documents(tmp_path):
    (tmp_path / "qa.jsonl").write_text(jsonl_lines([{"id": "q1", "question": "Why?"}]))
    (tmp_path / "export.jsonl").write_text(jsonl_lines([{"text": "A record."}]))
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    found, refused = discover([tmp_path])
    assert [p.name for p in found] == ["broken.jsonl", "export.jsonl"] and not refused
    named = list(load_all(tmp_path / "qa.jsonl"))  # named on purpose: each record refused
    assert [r.reason for r in named] == ['no "text" field holding a string']


def test_fifo_named_jsonl_in_a_folder_does_not_hang_discovery(tmp_path):
    os.mkfifo(tmp_path / "stream.jsonl")
    found, refused = discover([tmp_path])
    assert found == [] and [r.reason for r in refused] == [
        "not a regular file (a pipe, device or socket)"]
