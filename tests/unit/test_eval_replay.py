"""Replay: subsampled best-of-N estimates against exact combinatorial expectations, and the direct selection."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from pathlib import Path

import pytest

from ttc_graph.errors import ConfigurationError
from ttc_graph.eval import PoolQuestion, Sample, exact_accuracy, exact_question, load_pool, replay
from ttc_graph.eval.replay import as_candidates, choose, pool_from_samples
from ttc_graph.selection import select_answer

REAL_POOL = (
    Path(os.environ.get("TTC_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
    / "pools"
    / "gsm8k-qwen2.5-coder-0.5b-k8.jsonl"
)


def q(id_: str, *samples: tuple[str | None, float | None, bool]) -> PoolQuestion:
    return PoolQuestion(id_, tuple(Sample(a, s, c, 10) for a, s, c in samples))


# Built so that the three rules disagree: "7" has the most votes, "3" the largest weight, "9" the top score.
DISAGREE = q(
    "d",
    ("7", 0.1, False), ("3", 0.6, True), ("7", 0.1, False), ("9", 0.95, False),
    ("3", 0.6, True), ("7", 0.1, False), (None, None, False), ("7", 0.1, False),
)  # fmt: skip


def random_pool(seed: int, questions: int = 12, n: int = 6) -> list[PoolQuestion]:
    rng = random.Random(seed)
    pool = []
    for i in range(questions):
        gold = "1"
        samples = []
        for _ in range(n):
            answer = rng.choice(["1", "2", "3", None])
            score = None if rng.random() < 0.1 else round(rng.random(), 2)
            samples.append((answer, score, answer == gold))
        pool.append(q(str(i), *samples))
    return pool


def test_rules_disagree_at_full_budget() -> None:
    full = tuple(range(DISAGREE.n))
    picks = {m: DISAGREE.samples[choose(DISAGREE, full, m)].answer for m in ("majority", "weighted", "naive")}  # type: ignore[index]
    assert picks == {"majority": "7", "weighted": "3", "naive": "9"}


@pytest.mark.parametrize("method", ["majority", "weighted", "naive"])
def test_full_budget_equals_direct_selection(method: str) -> None:
    for question in [DISAGREE, *random_pool(1)]:
        direct = select_answer(as_candidates(question.samples), method)  # type: ignore[arg-type]
        idx = choose(question, tuple(range(question.n)), method)  # type: ignore[arg-type]
        if direct.candidate_id is None:
            assert idx is None
        else:
            assert f"s{idx}" == direct.candidate_id
        expected = direct.candidate_id is not None and question.samples[int(direct.candidate_id[1:])].correct
        assert exact_question(question, question.n, method) == float(expected)  # type: ignore[arg-type]
        result = replay([question], [question.n], methods=[method], trials=5)  # type: ignore[list-item]
        assert result.get(method, question.n).accuracy == float(expected)


@pytest.mark.parametrize("method", ["majority", "weighted", "naive"])
def test_subset_choice_matches_select_answer_on_every_subset(method: str) -> None:
    for question in random_pool(2, questions=4):
        for b in (1, 2, 3):
            for subset in itertools.combinations(range(question.n), b):
                cands = as_candidates([question.samples[i] for i in subset])
                direct = select_answer(cands, method)  # type: ignore[arg-type]
                idx = choose(question, subset, method)  # type: ignore[arg-type]
                assert (None if idx is None else f"s{subset.index(idx)}") == direct.candidate_id


def test_exact_expectation_by_hand() -> None:
    # two samples, one correct: majority at b=1 is right half the time; at b=2 a tie goes to the first sample
    question = q("h", ("5", 0.2, True), ("6", 0.9, False))
    assert exact_question(question, 1, "majority") == 0.5
    assert exact_question(question, 2, "majority") == 1.0
    assert exact_question(question, 2, "weighted") == 0.0
    assert exact_question(question, 2, "oracle") == 1.0
    assert exact_question(question, 1, "oracle") == 0.5


@pytest.mark.parametrize("trials", [50, 400])
def test_subsampled_matches_exact_within_tolerance(trials: int) -> None:
    pool = random_pool(3)
    result = replay(pool, [1, 2, 3, 4, 6], methods=["naive", "weighted", "majority", "oracle"], trials=trials, seed=7)
    # per-question estimates are means of `trials` draws in [0, 1]: the pooled mean has sd <= 0.5 / sqrt(trials * Q)
    tolerance = 5 * 0.5 / math.sqrt(trials * len(pool))
    for e in result.estimates:
        assert e.exact == pytest.approx(exact_accuracy(pool, e.budget, e.method))  # type: ignore[arg-type]
        assert abs(e.accuracy - e.exact) <= tolerance, (e, tolerance)  # type: ignore[operator]
        assert e.low <= e.accuracy <= e.high
        assert e.tokens == 10 * e.budget


def test_replay_is_seeded_and_intervals() -> None:
    pool = random_pool(4)
    a = replay(pool, [2], trials=30, seed=11)
    b = replay(pool, [2], trials=30, seed=11)
    assert a.estimates == b.estimates
    normal = replay(pool, [2], trials=30, seed=11, ci="normal")
    for e in normal.estimates:
        assert 0.0 <= e.low <= e.accuracy <= e.high <= 1.0
    assert normal.ci == "normal"


def test_replay_rejects_bad_budgets_and_settings() -> None:
    pool = random_pool(5, n=4)
    for budgets in ([0], [-1], [5]):
        with pytest.raises(ConfigurationError, match="budgets"):
            replay(pool, budgets)
    with pytest.raises(ConfigurationError, match="trials"):
        replay(pool, [1], trials=0)
    with pytest.raises(ConfigurationError, match="methods"):
        replay(pool, [1], methods=["best"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="ci"):
        replay(pool, [1], ci="wild")  # type: ignore[arg-type]


def test_load_pool_file(tmp_path: Path) -> None:
    rows = [
        {"idx": 3, "gold": 18.0, "samples": [
            {"text": "a", "tokens": 5, "mean_lp": -0.5, "min_lp": -2.0, "pred": 18.0, "correct": True},
            {"text": "b", "tokens": 7, "mean_lp": -0.1, "min_lp": -1.0, "pred": None, "correct": False},
        ]},
    ]  # fmt: skip
    file = tmp_path / "pool.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="malformed"):
        pool = load_pool(file)
    (question,) = pool
    assert question.id == "3"
    assert [s.answer for s in question.samples] == ["18", None]
    assert question.samples[0].score == pytest.approx(math.exp(-0.5))
    assert question.groups == (0, None)
    with pytest.warns(UserWarning):
        assert load_pool(file, score="min_lp")[0].samples[1].score == pytest.approx(math.exp(-1.0))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_pool(tmp_path / "none.jsonl")


def test_pool_from_sweep_samples() -> None:
    stored = {"q1": [{"answer": "4", "scores": {"confidence": 0.7}, "correct": True, "tokens": 3}]}
    (question,) = pool_from_samples(stored, "confidence")
    assert question.samples[0] == Sample("4", 0.7, True, 3)
    with pytest.raises(ConfigurationError):
        pool_from_samples({}, "confidence")


@pytest.mark.skipif(not REAL_POOL.is_file(), reason="shared sample pool not present")
def test_real_pool_replay_matches_exact() -> None:
    pool = load_pool(REAL_POOL)
    assert len(pool) == 60 and {p.n for p in pool} == {8}
    result = replay(pool, [1, 2, 4, 8], trials=100, seed=0)
    tolerance = 5 * 0.5 / math.sqrt(100 * len(pool))
    for e in result.estimates:
        assert e.exact is not None and abs(e.accuracy - e.exact) <= tolerance
    # at b = 1 every rule picks the one sample: the same accuracy (pass@1)
    assert len({result.get(m, 1).exact for m in ("naive", "weighted", "majority")}) == 1


def test_paired_difference() -> None:
    from ttc_graph.eval.replay import paired_difference

    pool = random_pool(6)
    diff, low, high = paired_difference(pool, 4, "weighted", "majority", seed=1)
    assert diff == pytest.approx(exact_accuracy(pool, 4, "weighted") - exact_accuracy(pool, 4, "majority"))
    assert low <= diff <= high
    assert paired_difference(pool, 1, "naive", "majority") == (0.0, 0.0, 0.0)  # one sample: every rule agrees
    with pytest.raises(ConfigurationError, match="methods"):
        paired_difference(pool, 2, "weighted", "best")  # type: ignore[arg-type]


def test_exact_expectation_given_the_first_samples() -> None:
    # weighted vote; 5 is right. Samples: 0: 5 @ 0.9, 1: 7 @ 0.95, 2: 5 @ 0.9, 3: 7 @ 0.2
    samples = (Sample("5", 0.9, True), Sample("7", 0.95, False), Sample("5", 0.9, True), Sample("7", 0.2, False))
    q = PoolQuestion("q", samples)
    assert exact_question(q, 2, "weighted", given=2) == 0.0  # only {0, 1}: 7 wins 0.95 to 0.9
    assert exact_question(q, 3, "weighted", given=2) == 0.5  # {0, 1, 2}: 5 wins 1.8; {0, 1, 3}: 7 wins 1.15
    assert exact_question(q, 3, "weighted", given=1) == 2 / 3  # {0, 1, 2} and {0, 2, 3} pick 5; {0, 1, 3} 7
    assert exact_question(q, 3, "weighted") == 0.5  # all four triples
    assert exact_question(q, 2, "oracle", given=1) == 1.0  # sample 0 is right and every subset holds it
    for given, budget in ((3, 2), (-1, 2), (0, 5)):
        with pytest.raises(ConfigurationError, match="given"):
            exact_question(q, budget, "weighted", given=given)
