"""Metadata formats, caption sources, type inference, file-level errors and path-escape rejection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_data_fixtures import write_image, write_mp4

from ufo_video.data.metadata import MetadataError, PathResolver, load_entries, read_records, resolve_path


def _codes(entry) -> list[str]:
    return [c for c, _ in entry.problems]


def test_json_jsonl_csv_give_the_same_entries(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_mp4(tmp_path / "v.mp4", frames=5)
    (tmp_path / "m.json").write_text(json.dumps([{"file_path": "a.png", "text": "an apple", "type": "image"},
                                                 {"file_path": "v.mp4", "cap": "a video"}]))
    (tmp_path / "m.jsonl").write_text('{"file_path": "a.png", "text": "an apple", "type": "image"}\n\n'
                                      '{"file_path": "v.mp4", "cap": "a video"}\n')
    (tmp_path / "m.csv").write_text("file_path,text,type\na.png,an apple,image\nv.mp4,a video,\n")
    for name in ("m.json", "m.jsonl", "m.csv"):
        entries = load_entries(tmp_path / name, tmp_path)
        assert [(e.text, e.type) for e in entries] == [("an apple", "image"), ("a video", "video")], name
        assert all(not e.problems for e in entries), name


def test_type_inferred_from_extension_not_defaulted_to_image(tmp_path: Path) -> None:
    write_mp4(tmp_path / "clip.mkv", frames=5)
    (tmp_path / "m.json").write_text(json.dumps([{"file_path": "clip.mkv", "text": "x"}]))
    assert load_entries(tmp_path / "m.json", tmp_path)[0].type == "video"


def test_caption_sidecar_and_empty_caption(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "a.txt").write_text("  from the sidecar \n")
    (tmp_path / "m.json").write_text(json.dumps([{"file_path": "a.png"}, {"file_path": "b.png"}]))
    a, b = load_entries(tmp_path / "m.json", tmp_path)
    assert (a.text, a.caption_source) == ("from the sidecar", "sidecar")
    assert (b.text, b.caption_source) == ("", "none") and _codes(b) == ["empty_caption"]


@pytest.mark.parametrize(
    "content, code, index",
    [
        ('[{"file_path": "a.png", "text": "x"},', "invalid_json", None),
        ('{"file_path": "a.png"}', "wrong_type", None),
        ('[{"file_path": "a.png", "text": "x"}, {"text": "no path"}]', "missing_field", 1),
        ('[{"file_path": "a.png", "text": 3}]', "wrong_type", 0),
        ('[{"file_path": "a.png", "text": "x", "type": "audio"}]', "wrong_type", 0),
        ('[{"file_path": "a.png"}, "just a string"]', "wrong_type", 1),
    ],
)
def test_file_level_errors_name_file_and_index(tmp_path: Path, content: str, code: str, index) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(content)
    with pytest.raises(MetadataError) as err:
        read_records(meta)
    assert err.value.code == code and err.value.index == index
    assert str(meta) in str(err.value)
    if index is not None:
        assert f"entry {index}" in str(err.value)


def test_jsonl_bad_line_is_located(tmp_path: Path) -> None:
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"file_path": "a.png"}\n{oops\n')
    with pytest.raises(MetadataError, match=r"line 2 \(entry 1\)"):
        read_records(meta)


def test_paths_escaping_the_root_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = write_image(tmp_path / "secret.png")
    write_image(root / "inside.png")
    os.symlink(outside, root / "link.png")
    os.symlink(root / "inside.png", root / "ok_link.png")
    records = [{"file_path": p, "text": "t"} for p in ("../secret.png", str(outside), "link.png", "inside.png",
                                                       "sub/../inside2.png", "ok_link.png")]
    (root / "m.json").write_text(json.dumps(records))
    entries = load_entries(root / "m.json", root)
    assert [("outside_root" in _codes(e)) for e in entries] == [True, True, True, False, False, False]
    assert "outside the dataset root" in entries[0].problems[0][1]
    # allowed on request
    entries = load_entries(root / "m.json", root, allow_outside=True)
    assert not any("outside_root" in _codes(e) for e in entries)


def test_resolver_gives_path_resolve_and_refuses_every_escape(tmp_path: Path) -> None:
    """The string resolver (parents' real paths cached) equals `Path.resolve()` on paths with
    `..`, `.`, doubled and trailing slashes, folder and file symlinks in and out of the root,
    missing parents, a dangling link and a symlink loop (reported missing, where `Path.resolve`
    raised); a folder symlink out of the root is
    refused like a file symlink, also when listed after a name under the same folder."""
    root = tmp_path / "root"
    outside = write_image(tmp_path / "out" / "secret.png")
    write_image(root / "a" / "x.png")
    os.symlink(tmp_path / "out", root / "escape")  # a folder leading out
    os.symlink(root / "a", root / "alias")  # a folder staying in
    os.symlink(outside, root / "a" / "filelink.png")
    os.symlink(root / "a" / "nothing.png", root / "dangling.png")
    os.symlink(root / "loop2", root / "loop1")
    os.symlink(root / "loop1", root / "loop2")
    names = ["a/x.png", "a/./x.png", "a//x.png", "a/x.png/", "alias/x.png", "alias/../a/x.png", "escape/secret.png",
             "escape/../root/a/x.png", "a/filelink.png", "a/../../out/secret.png", "missing/dir/x.png",
             "dangling.png", "loop1/x.png", "a/..", ".", "escape"]  # fmt: skip
    resolver = PathResolver(root, allow_outside=False)
    for name in names + names[::-1]:  # both orders: the parent cache must not change an answer
        path, resolved, problem = resolver.resolve(name)
        assert path == root / name and resolved == os.path.realpath(root / name), name
        if not name.startswith("loop"):  # Path.resolve raises on a loop; the entry is reported missing instead
            assert resolved == str((root / name).resolve()), name
        assert (problem is not None) == (not Path(resolved).is_relative_to(root.resolve())), name
    outside_names = {"escape/secret.png", "a/filelink.png", "a/../../out/secret.png", "escape"}
    records = [{"file_path": p, "text": "t"} for p in names]
    (root / "m.json").write_text(json.dumps(records))
    entries = load_entries(root / "m.json", root)
    assert {e.file_path for e in entries if "outside_root" in _codes(e)} == outside_names
    assert "missing_file" in _codes(entries[names.index("loop1/x.png")])
    assert resolve_path("a/x.png", root, False) == (root / "a" / "x.png", (root / "a" / "x.png").resolve(), None)


def test_entry_problems_missing_unsupported_duplicate(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    records = [{"file_path": "a.png", "text": "t"}, {"file_path": "nope.png", "text": "t"},
               {"file_path": "x.gif", "text": "t"}, {"file_path": "./a.png", "text": "t"},
               {"file_path": "a.png", "text": "t", "type": "video"}]
    (tmp_path / "m.json").write_text(json.dumps(records))
    e = load_entries(tmp_path / "m.json", tmp_path)
    assert _codes(e[0]) == []
    assert _codes(e[1]) == ["missing_file"]
    assert _codes(e[2]) == ["unsupported_format"]
    assert _codes(e[3]) == ["duplicate"]
    assert "unsupported_format" in _codes(e[4])
