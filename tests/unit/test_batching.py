"""Server-side batching's numpy helpers: stack the inputs, split the outputs by each input's rows.

The batcher itself (real threads, its real interval): tests/integration/test_batching_threads.py."""

from __future__ import annotations

import numpy as np

from predictor_runtime.batching import split, stack


def test_stack_and_split_keep_rows_in_order():
    items = [{"x": np.array([[1.0, 2.0]])}, {"x": np.array([[3.0, 4.0], [5.0, 6.0]])}, {"x": np.array([[7.0, 8.0]])}]
    feed, counts = stack(items)
    assert counts == [1, 2, 1]
    assert feed["x"].shape == (4, 2)
    pieces = split(feed["x"] * 2, counts)
    assert [p.tolist() for p in pieces] == [[[2, 4]], [[6, 8], [10, 12]], [[14, 16]]]
    # outputs without the batch dimension are handed to every member
    assert split(np.array(7), counts) == [np.array(7)] * 3
