"""The one schema of a pool sample (sweep pools, study pools, replay) and the one way a sample becomes a candidate.

A pool is the list of samples drawn once for a question; best-of-N at every budget reads a prefix of it (sweeps,
studies) or subsets of it (replay). Stored pools are JSON lists in the results store's ``pools`` table: a sweep's
samples carry ``answer``, ``correct`` and per-verifier ``scores``; a study's carry ``source``, ``mean_lp`` and the
study verifier's ``score`` but no ``answer`` (read from ``text`` by the full extraction chain). Both read and write
through :class:`PoolSample`, keeping the keys each wrote before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ttc_graph.answers import extract_answer
from ttc_graph.state import Candidate

__all__ = ["PoolSample", "pool_candidate", "pool_candidates", "read_pool", "write_pool"]


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One sampled solution of a pool. ``score`` is the verifier score selection reads (None: unscored);
    ``scores`` the score of each verifier a sweep ran; ``mean_lp`` the mean token log-probability of a sample
    whose token log-probabilities were not kept (the confidence verifier's ``mean`` reads nothing else)."""

    answer: str | None = None
    score: float | None = None
    correct: bool | None = None
    tokens: int | None = None
    text: str = ""
    seconds: float | None = None
    finish_reason: str | None = None
    scores: dict[str, float | None] | None = None
    token_logprobs: list[float] | None = None
    mean_lp: float | None = None
    source: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PoolSample:
        """A stored sample; one stored without ``answer`` (a study's) gets its answer from its text."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "answer" not in data:
            values["answer"] = extract_answer(str(data.get("text") or ""))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The sample as stored: ``answer`` always (None: no answer), every other key only when set."""
        out: dict[str, Any] = {"answer": self.answer}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "answer" and value is not None and not (f.name == "text" and value == ""):
                out[f.name] = value
        return out

    def scored_by(self, verifier: str | None = None) -> float | None:
        """The score selection reads: ``verifier``'s among ``scores``, or ``score`` when no verifier is named."""
        return self.score if verifier is None else (self.scores or {}).get(verifier)

    def with_score(self, value: float | None, verifier: str | None = None) -> PoolSample:
        """This sample scored ``value`` (as ``verifier``'s in ``scores`` when one is named)."""
        if verifier is None:
            return replace(self, score=value)
        return replace(self, scores={**(self.scores or {}), verifier: value})


def read_pool(stored: Iterable[Mapping[str, Any]]) -> list[PoolSample]:
    """A stored pool (JSON samples, draw order) as samples."""
    return [PoolSample.from_json(s) for s in stored]


def write_pool(samples: Iterable[PoolSample]) -> list[dict[str, Any]]:
    """Samples as a stored pool."""
    return [s.to_json() for s in samples]


def pool_candidate(i: int, sample: PoolSample | Mapping[str, Any], verifier: str | None = None) -> Candidate:
    """The ``i``-th sample of a pool (a :class:`PoolSample` or its stored JSON) as a candidate ``s{i}``, scored as
    :meth:`PoolSample.scored_by` ``verifier`` reads it; its token log-probabilities, or its mean log-probability
    standing for them."""
    s = sample if isinstance(sample, PoolSample) else PoolSample.from_json(sample)
    score = s.scored_by(verifier)
    cand: Candidate = {
        "id": f"s{i}",
        "text": s.text,
        "answer": s.answer,
        "parsable": s.answer is not None,
        "score": score,
        "step_scores": None,
        "scored": score is not None,
        "tokens": s.tokens,
        "round": 1,
        "finish_reason": s.finish_reason,
    }
    if s.token_logprobs:
        cand["token_logprobs"] = list(s.token_logprobs)
    elif s.mean_lp is not None:
        cand["token_logprobs"] = [float(s.mean_lp)]
    return cand


def pool_candidates(samples: Sequence[PoolSample | Mapping[str, Any]], verifier: str | None = None) -> list[Candidate]:
    """:func:`pool_candidate` of each sample, in pool order."""
    return [pool_candidate(i, s, verifier) for i, s in enumerate(samples)]
