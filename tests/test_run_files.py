"""Run-folder files: written through a temporary file, read as absent when missing or half-written."""

from llm.run_files import read_json, read_jsonl, write_json


def test_json_round_trip_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "run" / "final.json"
    write_json(path, {"step": 3, "metrics": {"val_loss": 1.5}})
    assert read_json(path) == {"step": 3, "metrics": {"val_loss": 1.5}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["final.json"]


def test_missing_or_cut_files_read_as_absent(tmp_path):
    assert read_json(tmp_path / "none.json") is None and read_jsonl(tmp_path / "none.jsonl") == []
    (tmp_path / "cut.json").write_text('{"step": ')
    assert read_json(tmp_path / "cut.json") is None
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n[2]\n{"step": 2}\n{"step": ')
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1}, {"step": 2}]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    import pytest

    from llm.run_files import replaced, write_text

    path = tmp_path / "config.yaml"
    write_text(path, "old")
    with pytest.raises(RuntimeError), replaced(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_jsonl_lines_name_each_record_and_each_bad_line_by_path_and_line():
    from llm.run_files import BadLine, jsonl_lines

    lines = [b'\xef\xbb\xbf{"a": 1}\n', b"\n", b"{oops\n", b"\xff\n", b"[2]\n", b"[" * 100_000 + b"]" * 100_000]
    found = list(jsonl_lines("d.jsonl", lines))
    assert [where for where, _ in found] == ["d.jsonl:1", "d.jsonl:3", "d.jsonl:4", "d.jsonl:5", "d.jsonl:6"]
    assert found[4][1] == BadLine("JSON nested too deeply")
    assert found[0][1] == {"a": 1} and found[3][1] == [2]
    assert isinstance(found[1][1], BadLine) and found[1][1].problem.startswith("not valid JSON")
    assert found[2][1].problem.startswith("not UTF-8 text")
