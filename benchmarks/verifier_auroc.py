"""How well verifiers tell correct from incorrect sampled GSM8K solutions (AUROC), and what the score cache saves.

(a) No model: the verifiers that need no model call, run through their ``verify`` on the real pools
    ``gsm8k-qwen2.5-coder-0.5b-k8.jsonl`` and ``-k16.jsonl`` (60 questions x 8 / 16 samples): ConfidenceVerifier
    (the pool keeps each sample's mean and min token logprob, so a one-value logprob list stands in for the
    tokens: "mean" = exp(mean logprob), "min" = exp(min logprob) = group with window=1), ArithmeticVerifier on
    the sample's steps, and CombinedVerifier products / weighted geometric means of them. For each: AUROC (pooled
    and mean within-question) and the replay accuracy of best-of-N weighted and naive at budgets 2, 4, 8 (16),
    exact over all C(N, b) subsets where that is at most --exact-limit per question, else --trials subsets.
(b) With a judge model (``--base-url URL --model NAME`` or ``--gguf PATH``): LLMJudgeVerifier in outcome and process
    mode over the pool's samples of the first ``--questions`` questions: AUROC, requests, tokens, cache hits/misses.
(c) Cache savings: the same samples re-scored round by round as beam search does (round r scores every sample's
    first r steps), with a ScoreCache and without. Identical judge requests are replayed from (b), so (c) costs no
    model time; its requests and tokens are the server's own figures for those prompts.

    .venv/bin/python benchmarks/verifier_auroc.py                      # (a) only
    .venv/bin/python benchmarks/verifier_auroc.py --gguf "$(bash ../shared/models/fetch-bench-model.sh)"
    .venv/bin/python benchmarks/verifier_auroc.py --base-url http://localhost:8000/v1 --model NAME --questions 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ttc_graph.answers import split_steps
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.endpoints.base import ChatMessage, GenerationResult, RequestUsage, SamplingParams
from ttc_graph.eval.replay import PoolQuestion, replay
from ttc_graph.eval.replay import load_pool as load_replay_pool
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    LLMJudgeVerifier,
    Score,
    ScoreCache,
    Verifier,
    VerifyItem,
    aggregate,
)

DATA = Path(os.environ.get("TTC_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
POOL = DATA / "pools" / "gsm8k-qwen2.5-coder-0.5b-k8.jsonl"
POOL16 = DATA / "pools" / "gsm8k-qwen2.5-coder-0.5b-k16.jsonl"
GSM8K = DATA / "gsm8k" / "test.jsonl"


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve by ranks (Mann-Whitney U), tied scores sharing their average rank.

    None when one class is absent.
    """
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ranks i+1 .. j+1, averaged
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def per_question_auroc(groups: Sequence[tuple[Sequence[float], Sequence[bool]]]) -> tuple[float | None, int]:
    """Mean AUROC over questions that have both correct and incorrect samples (what best-of-N selection needs)."""
    values = [a for s, y in groups if (a := auroc(s, y)) is not None]
    return (statistics.fmean(values) if values else None), len(values)


def load_pool(path: Path = POOL) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_questions() -> list[str]:
    with GSM8K.open(encoding="utf-8") as fh:
        return [json.loads(line)["question"] for line in fh]


# ------------------------------------------------------------------------------------------ (a) no model


def no_model_verifiers() -> dict[str, tuple[Verifier, str]]:
    """Label → (verifier, which pool logprob summary stands in for the token logprobs)."""
    conf, arith = ConfidenceVerifier("mean"), ArithmeticVerifier()
    return {
        "confidence mean  [ConfidenceVerifier mean]": (conf, "mean_lp"),
        "confidence min   [group, window=1]": (conf, "min_lp"),
        "arithmetic       [ArithmeticVerifier]": (arith, "mean_lp"),
        "conf x arith     [product]": (CombinedVerifier([conf, arith]), "mean_lp"),
        "conf x arith^2   [geometric, weights 1, 2]": (CombinedVerifier([conf, arith], [1, 2], "geometric"), "mean_lp"),
        "min-conf x arith [product]": (CombinedVerifier([conf, arith]), "min_lp"),
    }


async def score_pool(verifier: Verifier, pool: list[dict[str, Any]], questions: list[str], lp: str) -> list[Score]:
    items = [
        VerifyItem(questions[row["idx"]], tuple(split_steps(s["text"])) or (s["text"],), (float(s[lp]),))
        for row in pool
        for s in row["samples"]
    ]
    result = await verifier.verify(items)
    assert result.usage.requests == 0, "a no-model verifier made requests"
    return result.scores


def rescored(replay_pool: list[PoolQuestion], scores: list[Score]) -> list[PoolQuestion]:
    """The replay pool with each sample's score replaced by ``scores`` (in pool order)."""
    it = iter(scores)
    return [
        PoolQuestion(q.id, tuple(replace(s, score=next(it).value) for s in q.samples), q.groups) for q in replay_pool
    ]


def no_model_section(path: Path, questions: list[str], trials: int, exact_limit: int) -> None:
    pool = load_pool(path)
    replay_pool = load_replay_pool(path)
    k = min(len(row["samples"]) for row in pool)
    budgets = [b for b in (2, 4, 8, 16) if b <= k]
    samples = [s for row in pool for s in row["samples"]]
    labels = [bool(s["correct"]) for s in samples]
    groups = [row["idx"] for row in pool for _ in row["samples"]]
    print(
        f"(a) no-model verifiers on {path.name}: {len(pool)} questions x {k} samples = {len(samples)}, "
        f"{sum(labels)} correct ({sum(labels) / len(labels):.1%}); no model calls"
    )
    header = ["verifier", "AUROC pooled", "AUROC within-q"]
    header += [f"weighted@{b}" for b in budgets] + [f"naive@{b}" for b in budgets]
    rows: list[list[str]] = []
    baseline = replay(replay_pool, budgets, methods=("majority", "oracle"), trials=trials, exact_limit=exact_limit)
    for label, (verifier, lp) in no_model_verifiers().items():
        scores = asyncio.run(score_pool(verifier, pool, questions, lp))
        kept = [(sc.value, y, g) for sc, y, g in zip(scores, labels, groups, strict=True) if sc.value is not None]
        assert len(kept) == len(scores), f"{label}: {len(scores) - len(kept)} samples unscored"
        pooled = auroc([v for v, _, _ in kept], labels)
        by_q: dict[int, tuple[list[float], list[bool]]] = {}
        for v, y, g in kept:
            by_q.setdefault(g, ([], []))
            by_q[g][0].append(v)
            by_q[g][1].append(y)
        within, n_q = per_question_auroc(list(by_q.values()))
        res = replay(rescored(replay_pool, scores), budgets, methods=("weighted", "naive"), trials=trials,
                     exact_limit=exact_limit)  # fmt: skip
        accuracy = [fmt(_acc(res.get(m, b))) for m in ("weighted", "naive") for b in budgets]
        rows.append([label.split("[")[0].strip(), fmt(pooled), f"{fmt(within)} ({n_q} q)", *accuracy])
    for m in ("majority", "oracle"):
        label = "majority vote (no verifier)" if m == "majority" else "pass@b (oracle)"
        accuracy = [fmt(_acc(baseline.get(m, b))) for b in budgets]
        rows.append([label, "", "", *accuracy, *([""] * len(budgets))])
    print(markdown_table(header, rows))
    how = "exact expectation over all subsets"
    if not all(math.comb(k, b) <= exact_limit for b in budgets):
        how = (
            f"exact where C({k}, b) <= {exact_limit}, else the mean of {trials} subsets per question "
            "(seed 0, the same subsets for every verifier)"
        )
    print(f"    replay accuracy: {how}")
    print(flush=True)


def _acc(estimate: Any) -> float:
    return estimate.exact if estimate.exact is not None else estimate.accuracy


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- (b) and (c) judge


@dataclass
class ReplayEndpoint:
    """Forwards to a real endpoint once per distinct request and replays the stored result (usage included)
    for an identical one, so a second scoring pass over the same prompts is charged the server's real figures
    without spending model time."""

    inner: Any
    real: RequestUsage = field(default_factory=RequestUsage)
    _memo: dict[str, GenerationResult] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        key = json.dumps([list(messages), n, repr(params), prefix], sort_keys=True)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._memo:
                result = await self.inner.generate(messages, n=n, params=params, prefix=prefix)
                self.real.add(result.usage)
                self._memo[key] = result
            stored = self._memo[key]
        return GenerationResult(list(stored.generations), replace(stored.usage), list(stored.errors))


@contextlib.contextmanager
def judge_endpoint(args: argparse.Namespace) -> Iterator[OpenAIEndpoint]:
    if args.gguf:
        from ttc_graph.local import LocalModelServer

        t0 = time.perf_counter()
        with LocalModelServer(args.gguf, parallel=args.parallel, threads=args.threads) as server:
            print(
                f"    started llama.cpp server for {server.model_name} in {time.perf_counter() - t0:.1f}s", flush=True
            )
            yield server.endpoint()
    else:
        yield OpenAIEndpoint(args.base_url, args.model, max_concurrency=args.parallel)


def usage_line(u: RequestUsage) -> str:
    return f"{u.requests} requests, {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens" + (
        f", {u.failed_requests} failed" if u.failed_requests else ""
    )


def report_scores(label: str, scores: list[Score], labels: list[bool], groups: list[int]) -> None:
    kept = [(s.value, y, g) for s, y, g in zip(scores, labels, groups, strict=True) if s.value is not None]
    unscored = len(scores) - len(kept)
    pooled = auroc([v for v, _, _ in kept], [y for _, y, _ in kept])
    by_q: dict[int, tuple[list[float], list[bool]]] = {}
    for v, y, g in kept:
        by_q.setdefault(g, ([], []))
        by_q[g][0].append(v)
        by_q[g][1].append(y)
    within, n_q = per_question_auroc(list(by_q.values()))
    print(
        f"    {label}: AUROC pooled {fmt(pooled)}, mean within-question {fmt(within)} ({n_q} questions); "
        f"{len(kept)} scored, {unscored} unscored"
    )


async def judge_section(args: argparse.Namespace, pool: list[dict[str, Any]], questions: list[str]) -> None:
    rows = pool[: args.questions]
    items: list[VerifyItem] = []
    labels: list[bool] = []
    groups: list[int] = []
    for row in rows:
        for s in row["samples"][: args.samples]:
            steps = tuple(split_steps(s["text"])) or (s["text"],)
            items.append(VerifyItem(questions[row["idx"]], steps))
            labels.append(bool(s["correct"]))
            groups.append(row["idx"])
    n_prefixes = sum(len(i.steps) for i in items)
    print(
        f"(b) LLM judge on {len(items)} pool samples of {len(rows)} questions ({sum(labels)} correct, "
        f"{n_prefixes} step prefixes)",
        flush=True,
    )
    with judge_endpoint(args) as raw:
        endpoint = ReplayEndpoint(raw)
        deadline = time.perf_counter() + args.time_limit if args.time_limit else math.inf
        t0 = time.perf_counter()
        by_question = {row["idx"]: [k for k, g in enumerate(groups) if g == row["idx"]] for row in rows}
        verifiers = {
            "outcome": LLMJudgeVerifier(endpoint, mode="outcome", cache=ScoreCache()),
            # One solution's prefixes in order, so llama.cpp reuses each slot's cached prompt.
            "process": LLMJudgeVerifier(endpoint, mode="process", cache=ScoreCache(), sequential_prefixes=True),
        }
        scores: dict[str, dict[int, Score]] = {"outcome": {}, "process": {}}
        spent = {"outcome": RequestUsage(), "process": RequestUsage()}
        done = 0
        for q, idx in by_question.items():  # question by question, both modes: a cut-short run still reports
            if time.perf_counter() > deadline:
                print(f"    time limit reached: judged {done} of {len(by_question)} questions", flush=True)
                break
            for mode, verifier in verifiers.items():
                res = await verifier.verify([items[k] for k in idx])
                scores[mode].update(zip(idx, res.scores, strict=True))
                spent[mode].add(res.usage)
                print(
                    f"    q{q} {mode}: correct {[int(labels[k]) for k in idx]} "
                    f"scores {[fmt(s.value, 2) for s in res.scores]} [{time.perf_counter() - t0:.0f}s]",
                    flush=True,
                )
            done += 1
        print(f"    judge logprobs from server: {verifiers['outcome'].logprobs_supported}")
        for mode, verifier in verifiers.items():
            judged = sorted(scores[mode])
            if not judged:
                continue
            subset = ([labels[k] for k in judged], [groups[k] for k in judged])
            mode_scores = [scores[mode][k] for k in judged]
            if mode == "outcome":
                report_scores("outcome judge P(Yes)", mode_scores, *subset)
            else:
                report_scores("process judge, last step", mode_scores, *subset)
                for how in ("min", "mean", "prod"):
                    agg = [Score(aggregate(s.step_scores, how)) if s.step_scores else s for s in mode_scores]
                    report_scores(f"process judge, {how} of steps", agg, *subset)
            stats = verifier.cache.stats() if verifier.cache else None
            print(f"        {len(judged)} samples of {done} questions; cost {usage_line(spent[mode])}; cache {stats}")
        print(f"    wall time {time.perf_counter() - t0:.0f}s; server work {usage_line(endpoint.real)}", flush=True)
        print()
        judged_items = [items[k] for k in sorted(scores["process"])]
        if judged_items:
            await cache_section(endpoint, judged_items, args.rounds)


async def cache_section(endpoint: ReplayEndpoint, items: list[VerifyItem], max_rounds: int) -> None:
    rounds = min(max_rounds, max(len(i.steps) for i in items))
    print(
        f"(c) cache savings: the same {len(items)} samples re-scored as beam search does, rounds 1..{rounds} "
        "(round r scores every unfinished sample's first r steps; process judge)"
    )
    real_before = (endpoint.real.requests, endpoint.real.prompt_tokens)
    results = {}
    for label, cache in (("with ScoreCache", ScoreCache()), ("without cache", False)):
        judge = LLMJudgeVerifier(endpoint, mode="process", cache=cache)
        total = RequestUsage()
        for r in range(1, rounds + 1):
            batch = [VerifyItem(i.question, i.steps[:r]) for i in items if len(i.steps) >= r]
            total.add((await judge.verify(batch)).usage)
        results[label] = total
        extra = f"; cache {judge.cache.stats()}" if judge.cache else ""
        print(f"    {label}: {usage_line(total)}{extra}")
    w, wo = results["with ScoreCache"], results["without cache"]
    saved_r = wo.requests - w.requests
    saved_t = (wo.prompt_tokens + wo.completion_tokens) - (w.prompt_tokens + w.completion_tokens)
    share = saved_t / max(1, wo.prompt_tokens + wo.completion_tokens)
    print(f"    the cache saves {saved_r} of {wo.requests} requests and {saved_t} tokens ({share:.0%})")
    new_real = (endpoint.real.requests - real_before[0], endpoint.real.prompt_tokens - real_before[1])
    print(f"    (new server requests for this section: {new_real[0]}; the rest replayed from (b))")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="OpenAI-compatible judge server, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="judge model name on --base-url")
    parser.add_argument("--gguf", help="GGUF file to serve locally as the judge (llama.cpp)")
    parser.add_argument("--questions", type=int, default=5, help="pool questions judged in (b) and (c)")
    parser.add_argument("--samples", type=int, default=8, help="samples per question judged (max 8)")
    parser.add_argument("--rounds", type=int, default=6, help="beam rounds simulated in (c)")
    parser.add_argument("--parallel", type=int, default=4, help="server slots / concurrent judge requests")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (--gguf)")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="seconds; judge no further question after this, then report"
    )
    parser.add_argument("--trials", type=int, default=500, help="replay subsets per question where not exact")
    parser.add_argument("--exact-limit", type=int, default=5000, help="enumerate all subsets up to this many")
    args = parser.parse_args()
    if bool(args.base_url) != bool(args.model):
        parser.error("--base-url and --model go together")
    if args.gguf and args.base_url:
        parser.error("use either --gguf or --base-url/--model")

    questions = load_questions()
    for path in (POOL, POOL16):
        no_model_section(path, questions, args.trials, args.exact_limit)
    if not (args.gguf or args.base_url):
        print("(b), (c): pass --gguf PATH or --base-url URL --model NAME to run the LLM judge")
        return
    asyncio.run(judge_section(args, load_pool(), questions))


if __name__ == "__main__":
    sys.exit(main())
