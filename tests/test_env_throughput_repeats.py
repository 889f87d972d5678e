"""``benchmarks.env_throughput --repeats``: medians per face, and the vector / single ratio taken
within each repeat (side by side), never from two repeats' medians."""

from __future__ import annotations

import pytest

from benchmarks.env_throughput import render_markdown, summarize_repeats


def run(vector: float, single: float) -> dict[str, float]:
    return {"single loop": single, "DynaLayVectorEnv": vector, "raw limit": 2 * vector, "padded share": 0.1}


def test_one_repeat_is_reported_as_measured():
    assert summarize_repeats([run(20_000, 700)]) == run(20_000, 700)


def test_repeats_give_medians_and_the_range_of_side_by_side_ratios():
    res = summarize_repeats([run(20_000, 800), run(24_000, 600), run(21_000, 700)])
    assert res["DynaLayVectorEnv"] == 21_000 and res["single loop"] == 700
    assert res["ratio_range"] == pytest.approx([25.0, 40.0])  # 20k / 800 and 24k / 600, each within one repeat
    assert res["ratio_median"] == pytest.approx(30.0)  # 21k / 700
    assert len(res["repeats"]) == 3
    table = render_markdown({"machine": "m", "load_before": "0", "load_after": "0", "bucket_ratio": 1.25,
                             "sizes": {256: res}})
    assert "30.0x (25.0-40.0x over 3 runs)" in table


def test_repeats_below_one_are_refused_before_any_work(capsys):
    from benchmarks.env_throughput import main

    with pytest.raises(SystemExit):
        main(["--repeats", "0"])
    assert "--repeats must be an integer >= 1, got 0" in capsys.readouterr().err
