import json

from llm.train.log import EvalItemsLog


def test_eval_items_log_keeps_step_0_latest_and_best_and_resume_drops_newer_entries(tmp_path):
    path = tmp_path / "eval_items.json"
    log = EvalItemsLog(path, None, None)
    log.write(0, {"items": {"a": False, "b": False}, "preferred": {"a": False, "b": False}}, None)
    log.write(10, {"items": {"a": True, "b": False}}, "step_0000010")
    log.write(20, {"items": {"a": True, "b": True}}, None)  # evaluated, not better: the best stays step 10's
    record = json.loads(path.read_text())
    assert record == {"step0": {"step": 0, "items": {"a": False, "b": False}, "preferred": {"a": False, "b": False}},
                      "latest": {"step": 20, "items": {"a": True, "b": True}},
                      "best": {"step": 10, "checkpoint": "step_0000010", "items": {"a": True, "b": False}}}
    # resumed from step 15's checkpoint: step 20's evaluation is redone, the rest is kept
    assert EvalItemsLog(path, 15, "step_0000010").record == {"step0": record["step0"], "best": record["best"]}
    # resumed from step 10 with another best checkpoint on record (the file's best was written, its save was not)
    assert EvalItemsLog(path, 10, None).record == {"step0": record["step0"]}
    # a new run in the same folder starts from nothing
    assert EvalItemsLog(path, None, None).record == {}
