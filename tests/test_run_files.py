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
