import numpy as np

from llm.data.windows import RandomWindows, eval_windows


def test_targets_are_inputs_shifted():
    tokens = np.arange(1000, dtype=np.uint16)
    batch = RandomWindows(tokens, 4, 16, seed=0).next_batch()
    assert batch["input_ids"].shape == (4, 16)
    assert (batch["targets"][:, :-1] == batch["input_ids"][:, 1:]).all()
    assert (batch["targets"] == batch["input_ids"] + 1).all()


def test_sampler_position_restores_the_same_batches():
    tokens = np.arange(5000, dtype=np.uint16)
    a = RandomWindows(tokens, 4, 16, seed=3)
    for _ in range(5):
        a.next_batch()
    b = RandomWindows(tokens, 4, 16, seed=3)
    b.load_state_dict(a.state_dict())
    assert (a.next_batch()["input_ids"] == b.next_batch()["input_ids"]).all()
    other_rank = RandomWindows(tokens, 4, 16, seed=3, rank=1, world_size=2)
    other_rank.load_state_dict({"batches_drawn": 6})
    assert not (a.next_batch()["input_ids"] == other_rank.next_batch()["input_ids"]).all()


def test_processes_split_the_batch_one_process_of_their_total_would_draw():
    tokens = np.arange(5000, dtype=np.uint16)
    whole = RandomWindows(tokens, 8, 16, seed=3)
    parts = [RandomWindows(tokens, 4, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        joined = np.concatenate([p.next_batch()["input_ids"].numpy() for p in parts])
        assert (joined == whole.next_batch()["input_ids"].numpy()).all()


def test_eval_windows_are_fixed_and_disjoint():
    tokens = np.arange(200, dtype=np.uint16)
    batches = eval_windows(tokens, 3, 10, max_batches=100)
    starts = [int(x) for b in batches for x in b["input_ids"][:, 0]]
    assert starts == list(range(0, 190, 10))
    assert len(eval_windows(tokens, 3, 10, max_batches=2)) == 2


def test_repeated_spans_copy_a_span_of_the_row_further_on_at_varying_distances():
    tokens = np.arange(100_000)  # every token distinct, so a repeat is the only way a token occurs twice in a row
    sampler = RandomWindows(tokens, batch_size=64, block_size=64, seed=0, repeat_fraction=0.5)
    rows = sampler.next_batch()["input_ids"]
    repeated, distances = 0, set()
    for row in rows.tolist():
        seen = {token: i for i, token in enumerate(row)}
        copies = [(i, seen[t]) for i, t in enumerate(row) if seen[t] != i]
        if copies:
            repeated += 1
            earlier, later = copies[0]  # (a span token's first position, its copy's)
            distances.add(later - earlier)
            # one contiguous span, copied whole: the span and its copy both run consecutively
            assert copies == [(earlier + k, later + k) for k in range(len(copies))]
            assert 1 <= len(copies) <= 24
    assert 20 <= repeated <= 44 and len(distances) > 10
    plain = RandomWindows(tokens, batch_size=64, block_size=64, seed=0)
    assert all(len(set(r)) == len(r) for r in plain.next_batch()["input_ids"].tolist())


def test_repeated_spans_split_across_processes_as_one_process_draws_them():
    tokens = np.arange(50_000)
    whole = RandomWindows(tokens, batch_size=8, block_size=32, seed=3, repeat_fraction=0.5).next_batch()
    halves = [RandomWindows(tokens, batch_size=4, block_size=32, seed=3, rank=r, world_size=2, repeat_fraction=0.5).next_batch()
              for r in (0, 1)]
    assert (np.concatenate([h["input_ids"] for h in halves]) == whole["input_ids"].numpy()).all()
