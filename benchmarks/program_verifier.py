"""The program-checked verifier (ProgramVerifier) against confidence x arithmetic, on real samples.

(a) Settings, on GSM8K *train* questions (never evaluated): for the first ``--train-questions`` questions of
    ``../shared/data/gsm8k/train.jsonl`` the benchmark model writes ``--train-candidates`` solutions each (the
    study pool's prompt and sampling: temperature 0.8, max_tokens 512, logprobs), ``--max-programs`` programs at
    temperature 0.8 and ``--other-programs`` at the other ``--temperatures``. Every setting (programs k in
    ``--ks`` up to what was sampled, temperature) scores the candidates with the first k programs at that
    temperature; the setting with the highest pooled AUROC against the candidates' correctness is chosen (ties:
    fewer programs, then the lower temperature).
(b) The study's questions: the 16 best-of-N pool samples per question stored in ``docs/study/study.sqlite``
    (answer, correctness and the study verifier's confidence x arithmetic score of each). The program verifier
    at the default setting (k=4, temperature 0.8) and at the chosen one scores the same samples; printed: AUROC
    (pooled and mean within question), and best-of-N weighted accuracy at N = 1..16 (the replay estimator of
    ttc_graph.eval.replay: ``--trials`` seeded subsets of N of the 16 samples per question) for each verifier,
    plus majority voting and pass@N.

Programs are sampled once and kept (the replies, as JSON under ``--cache-dir``), so a rerun or a resumed run
spends no model time on what it has; the sandbox reruns them (cheap). Requests are single samples, at most
``--concurrency`` at a time, train and study requests in turn (the study questions in order: the default
setting's programs first, the chosen setting's once it is known); no new request starts after ``--deadline``
minutes, and (b) reports the study questions whose programs are all in.

    nice .venv/bin/python benchmarks/program_verifier.py --base-url http://127.0.0.1:8090/v1 --model bench
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from ttc_graph.answers import answers_equal, extract_answer, gsm8k_reference, split_steps
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.endpoints.base import GenerationResult, RequestUsage, SamplingParams
from ttc_graph.eval.replay import PoolQuestion, ReplayResult, Sample, exact_accuracy, replay
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    ProgramVerifier,
    VerifyItem,
)
from ttc_graph.verifiers.program import DEFAULT_PROGRAM_PROMPT, DEFAULT_PROGRAM_SYSTEM_PROMPT
from ttc_graph.verifiers.sandbox import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verifier_auroc import auroc, fmt, per_question_auroc

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(
    os.environ.get("TTC_DATA_DIR")
    or next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent)
)
STUDY_DB = ROOT / "docs" / "study" / "study.sqlite"
POOL_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT = (4, 0.8)


# ------------------------------------------------------------------------------------------------- data


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_study(db: Path) -> dict[int, dict[str, Any]]:
    """Question index → {"samples": [{"text", "mean_lp", "answer", "correct", "score"}]} from the study's
    best-of-N run at budget 16 (its candidates are the pool samples, in order)."""
    con = sqlite3.connect(db)
    pools = {int(q): json.loads(s) for q, s in con.execute("SELECT question_id, samples FROM pools")}
    runs = {
        int(q): json.loads(c)
        for q, c in con.execute("SELECT question_id, candidates FROM runs WHERE strategy='bon_weighted' AND budget=16")
    }
    con.close()
    out = {}
    for q in sorted(pools):
        if q not in runs or len(runs[q]) != len(pools[q]):
            continue
        samples = [
            {"text": p["text"], "mean_lp": p.get("mean_lp"), "answer": c["answer"], "correct": bool(c["correct"]),
             "score": c["score"]}
            for p, c in zip(pools[q], runs[q], strict=True)
        ]  # fmt: skip
        out[q] = {"samples": samples}
    return out


class Store:
    """A JSON file of sampled texts by key, written atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, list[Any]] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> list[Any]:
        return self.data.setdefault(key, [])

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


class Replayed:
    """An endpoint that answers with replies sampled earlier (the verifier's request is the same question)."""

    name = "replayed"

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.by_prompt = {DEFAULT_PROGRAM_PROMPT.format(question=q): r for q, r in replies.items()}

    async def generate(self, messages, *, n=1, params=None, prefix=None) -> GenerationResult:  # type: ignore[no-untyped-def]
        from ttc_graph.endpoints.base import Generation

        texts = self.by_prompt[messages[-1]["content"]][:n]
        return GenerationResult([Generation(t) for t in texts], RequestUsage(requests=len(texts)))


# ------------------------------------------------------------------------------------------------ sampling


async def sample_all(args: argparse.Namespace, train: list[dict[str, Any]], study_questions: dict[int, str],
                     cands: Store, progs: Store, plan: dict[str, Any]) -> dict[str, float]:  # fmt: skip
    endpoint = OpenAIEndpoint(args.base_url, args.model, max_concurrency=args.concurrency, native_n=False)
    verifier = ProgramVerifier(endpoint, max_tokens=args.program_tokens)
    deadline = time.monotonic() + args.deadline * 60
    stats = {"requests": 0, "completion_tokens": 0, "prompt_tokens": 0, "failed": 0}
    pending: dict[str, int] = {}  # key -> requests in flight

    def need(store: Store, key: str, want: int) -> bool:
        return len(store.get(key)) + pending.get(key, 0) < want

    turn = [0]

    def train_job() -> tuple[str, str, Any] | None:
        for i, row in enumerate(train):
            key = f"train:{i}"
            if need(cands, key, args.train_candidates):
                return ("cand", key, row["question"])
        for t in args.temperatures:
            for i, row in enumerate(train):
                key = f"train:{i}:{t:g}"
                if need(progs, key, programs_at(args, t)):
                    return ("prog", key, (row["question"], t))
        return None

    def study_job() -> tuple[str, str, Any] | None:
        wanted = {DEFAULT[1]: DEFAULT[0]}
        chosen = plan.get("chosen")
        if chosen is not None:
            wanted[chosen[1]] = max(wanted.get(chosen[1], 0), chosen[0])
        for q, question in study_questions.items():
            for t, k in wanted.items():
                key = f"study:{q}:{t:g}"
                if need(progs, key, k):
                    return ("prog", key, (question, t))
        return None

    def next_job() -> tuple[str, str, Any] | None:
        """Train and study requests in turn (the default setting's study programs are needed whatever is
        chosen), so a slow server still yields both; no new request after the deadline."""
        if time.monotonic() > deadline:
            return None
        turn[0] += 1
        order = (train_job, study_job) if turn[0] % 2 else (study_job, train_job)
        for pick in order:
            job = pick()
            if job is not None:
                return job
        return None

    async def one(kind: str, key: str, payload: Any) -> None:
        if kind == "cand":
            messages = [{"role": "system", "content": POOL_SYSTEM}, {"role": "user", "content": payload}]
            params = SamplingParams(temperature=0.8, max_tokens=512, logprobs=True)
        else:
            question, t = payload
            messages = verifier.messages_for(question)
            params = SamplingParams(temperature=t, max_tokens=args.program_tokens)
        try:
            result = await endpoint.generate(messages, n=1, params=params)
        except Exception as exc:  # counted; the job is offered again
            stats["failed"] += 1
            print(f"  request failed ({key}): {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(2)
            return
        stats["requests"] += result.usage.requests
        stats["completion_tokens"] += result.usage.completion_tokens
        stats["prompt_tokens"] += result.usage.prompt_tokens
        for gen in result.generations:
            if kind == "cand":
                lps = gen.token_logprobs or ()
                mean_lp = math.fsum(lps) / len(lps) if lps else None
                cands.get(key).append({"text": gen.text, "mean_lp": mean_lp, "finish": gen.finish_reason})
                cands.save()
            else:
                progs.get(key).append(gen.text)
                progs.save()

    started = time.monotonic()
    last_report = [started]

    async def worker() -> None:
        while True:
            job = next_job()
            if job is None:
                return
            kind, key, payload = job
            pending[key] = pending.get(key, 0) + 1
            try:
                await one(kind, key, payload)
            finally:
                pending[key] -= 1
            if "chosen" not in plan and not plan.get("choosing") and train_done(args, train, cands, progs):
                plan["choosing"] = True
                chosen = await asyncio.to_thread(choose_setting, args, train, cands, progs, True)
                plan["chosen"] = chosen[0]
                print(f"  chosen on train: programs={chosen[0][0]}, temperature={chosen[0][1]:g}", flush=True)
            now = time.monotonic()
            if now - last_report[0] > 60:
                last_report[0] = now
                print(f"  [{(now - started) / 60:.1f} min] {stats}", flush=True)

    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        await endpoint.aclose()
    stats["minutes"] = round((time.monotonic() - started) / 60, 1)
    return stats


def programs_at(args: argparse.Namespace, t: float) -> int:
    """Programs sampled per train question at temperature ``t``: ``--max-programs`` at the default temperature,
    ``--other-programs`` at the others (to save model time)."""
    return args.max_programs if t == DEFAULT[1] else args.other_programs


def train_done(args: argparse.Namespace, train: list[dict[str, Any]], cands: Store, progs: Store) -> bool:
    for i in range(len(train)):
        if len(cands.get(f"train:{i}")) < args.train_candidates:
            return False
        for t in args.temperatures:
            if len(progs.get(f"train:{i}:{t:g}")) < programs_at(args, t):
                return False
    return True


# ------------------------------------------------------------------------------------------------ scoring


def program_scores(sandbox: Sandbox, replies: dict[str, list[str]], items: list[VerifyItem], k: int) -> list[float]:
    """ProgramVerifier scores of ``items`` with the first ``k`` stored replies of each question."""
    verifier = ProgramVerifier(Replayed(replies), programs=k, sandbox=sandbox, cache_size=None)
    result = asyncio.run(verifier.verify(items))
    return [s.value if s.value is not None else math.nan for s in result.scores]


def run_stats(sandbox: Sandbox, replies: list[str]) -> dict[str, int]:
    verifier = ProgramVerifier(Replayed({}), sandbox=sandbox)
    found = asyncio.run(verifier.run(replies))
    counts: dict[str, int] = {}
    for program, result, answer in zip(found.programs, found.results, found.answers, strict=True):
        status = "no code" if program is None else ("ok" if result and result.ok else (result.error if result else "?"))
        if status == "ok" and answer is None:
            status = "no number"
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def conf_arith_scores(items: list[VerifyItem]) -> list[float]:
    verifier = CombinedVerifier([ConfidenceVerifier("mean"), ArithmeticVerifier()])
    return [s.value if s.value is not None else math.nan for s in asyncio.run(verifier.verify(items)).scores]


Setting = tuple[int, float]


def choose_setting(
    args: argparse.Namespace, train: list[dict[str, Any]], cands: Store, progs: Store, quiet: bool = False
) -> tuple[Setting, list[tuple[Setting, float | None]], dict[str, Any]]:
    """The (k, temperature) with the highest pooled AUROC on the train candidates, every setting's AUROC, and the
    train baseline's figures."""
    items, labels, groups = [], [], []
    for i, row in enumerate(train):
        gold = gsm8k_reference(row["answer"])
        start = len(items)
        for c in cands.get(f"train:{i}")[: args.train_candidates]:
            lp = (c["mean_lp"],) if c.get("mean_lp") is not None else None
            items.append(VerifyItem(row["question"], tuple(split_steps(c["text"])) or ("",), lp))
            labels.append(answers_equal(extract_answer(c["text"]), gold))
        groups.append((start, len(items)))
    results: list[tuple[Setting, float | None]] = []
    with Sandbox(workers=2) as sandbox:
        for t in args.temperatures:
            replies = {row["question"]: progs.get(f"train:{i}:{t:g}") for i, row in enumerate(train)}
            for k in (k for k in args.ks if k <= programs_at(args, t)):
                scores = program_scores(sandbox, replies, items, k)
                results.append(((k, t), auroc([0.5 if math.isnan(s) else s for s in scores], labels)))
    ranked = sorted(results, key=lambda r: (-(r[1] if r[1] is not None else -1.0), r[0][0], r[0][1]))
    base = conf_arith_scores(items)
    baseline = {
        "questions": len(train), "candidates": len(items), "correct": sum(labels),
        "auroc": auroc([0.0 if math.isnan(s) else s for s in base], labels),
    }  # fmt: skip
    if not quiet:
        print(f"\n(a) settings on {len(train)} GSM8K train questions, {len(items)} candidates "
              f"({sum(labels)} correct); confidence x arithmetic AUROC {fmt(baseline['auroc'])}")  # fmt: skip
        print("  programs  temperature  AUROC")
        for (k, t), a in results:
            print(f"  {k:>8}  {t:>11g}  {fmt(a)}")
        print(f"  chosen: programs={ranked[0][0][0]}, temperature={ranked[0][0][1]:g} (highest AUROC; ties: fewer "
              "programs, lower temperature)")  # fmt: skip
    return ranked[0][0], results, baseline


def report_study(args: argparse.Namespace, study: dict[int, dict[str, Any]], questions: dict[int, str],
                 progs: Store, chosen: tuple[int, float]) -> None:  # fmt: skip
    settings = [DEFAULT] if chosen == DEFAULT else [DEFAULT, chosen]
    done = [
        q for q in questions
        if all(len(progs.get(f"study:{q}:{t:g}")) >= k for k, t in settings)
    ]  # fmt: skip
    if not done:
        print("\n(b) no study question has its programs yet")
        return
    items, labels, base_scores, spans = [], [], [], []
    for q in done:
        start = len(items)
        for s in study[q]["samples"]:
            lp = (s["mean_lp"],) if s.get("mean_lp") is not None else None
            items.append(VerifyItem(questions[q], tuple(split_steps(s["text"])) or ("",), lp))
            labels.append(s["correct"])
            base_scores.append(s["score"])
        spans.append((q, start, len(items)))
    columns: dict[str, list[float]] = {"confidence x arithmetic (study)": base_scores}
    program_columns: list[str] = []
    counts: dict[str, int] = {}
    with Sandbox(workers=2) as sandbox:
        for k, t in settings:
            replies = {questions[q]: progs.get(f"study:{q}:{t:g}") for q in done}
            label = f"program k={k} T={t:g}" + (" (default)" if (k, t) == DEFAULT else " (chosen on train)")
            columns[label] = program_scores(sandbox, replies, items, k)
            program_columns.append(label)
            if (k, t) == settings[-1]:
                for q in done:
                    for status, n in run_stats(sandbox, replies[questions[q]][:k]).items():
                        counts[status] = counts.get(status, 0) + n
    for label in program_columns:  # the combination the issue asks for: product of the three parts
        columns[f"conf x arith x {label.split(' (')[0]}"] = [
            b * p for b, p in zip(base_scores, columns[label], strict=True)
        ]
    print(f"\n(b) the study's questions: {len(done)} of {len(questions)} with programs in, "
          f"{len(items)} pool samples ({sum(labels)} correct)")  # fmt: skip
    print(f"  programs of the last setting: {counts}")
    print(f"  {'verifier':<44} {'AUROC':>6} {'within-q':>9} (questions)")
    for label, scores in columns.items():
        clean = [0.5 if math.isnan(s) else s for s in scores]
        within = per_question_auroc([(clean[a:b], labels[a:b]) for _, a, b in spans])
        print(f"  {label:<44} {fmt(auroc(clean, labels)):>6} {fmt(within[0]):>9} ({within[1]})")
    budgets = list(range(1, 17))
    header = "  N      " + " ".join(f"{b:>5}" for b in budgets)
    print(
        f"\n  best-of-N weighted accuracy (exact where C(16, N) <= 5000, i.e. N <= 4 or N >= 12; else the mean over "
        f"{args.trials} seeded subsets of N per question)\n{header}"
    )
    last: tuple[ReplayResult, list[PoolQuestion]] | None = None
    for label, scores in columns.items():
        pool = [
            PoolQuestion(str(q), tuple(
                Sample(s["answer"], None if math.isnan(v) else v, s["correct"])
                for s, v in zip(study[q]["samples"], scores[a:b], strict=True)
            ))
            for q, a, b in spans
        ]  # fmt: skip
        result = replay(pool, budgets, methods=("weighted", "majority", "oracle"), trials=args.trials, seed=0)
        print(f"  {label}\n         {row_of(result, 'weighted', budgets)}")
        last = (result, pool)
    if last is not None:
        print(f"  majority vote\n         {row_of(last[0], 'majority', budgets)}")
        passes = " ".join(f"{exact_accuracy(last[1], b, 'oracle'):5.3f}" for b in budgets)
        print(f"  pass@N (exact)\n         {passes}")


def row_of(result: ReplayResult, method: str, budgets: list[int]) -> str:
    """Accuracies at each budget: exact where every question has at most 5000 subsets, else the replay's mean."""
    cells = []
    for b in budgets:
        e = result.get(method, b)
        cells.append(f"{e.exact if e.exact is not None else e.accuracy:5.3f}")
    return " ".join(cells)


# --------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8090/v1")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "ttc_graph" / "program_verifier")
    parser.add_argument("--train-questions", type=int, default=8)
    parser.add_argument("--train-candidates", type=int, default=4)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 0.8])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--max-programs", type=int, default=8, help="programs per train question at temperature 0.8")
    parser.add_argument("--other-programs", type=int, default=4, help="... at the other temperatures")
    parser.add_argument("--program-tokens", type=int, default=200)
    parser.add_argument("--study-questions", type=int, default=101)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=60.0, help="minutes after which no new request starts")
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--offline", action="store_true", help="report from the cache only, no requests")
    args = parser.parse_args()
    if DEFAULT[1] not in args.temperatures or max(args.ks) > args.max_programs:
        parser.error("the temperatures must include 0.8 and --max-programs must cover --ks")

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    cands = Store(args.cache_dir / "train_candidates.json")
    prompt = [DEFAULT_PROGRAM_SYSTEM_PROMPT, DEFAULT_PROGRAM_PROMPT]
    digest = hashlib.sha1(json.dumps([prompt, args.program_tokens]).encode()).hexdigest()[:8]
    progs = Store(args.cache_dir / f"programs-{digest}.json")  # replies of this prompt and max_tokens only
    train = load_jsonl(DATA / "gsm8k" / "train.jsonl")[: args.train_questions]
    test = load_jsonl(DATA / "gsm8k" / "test.jsonl")
    study = load_study(STUDY_DB)
    questions = {q: test[q]["question"] for q in list(study)[: args.study_questions]}
    print(f"train: {len(train)} questions; study: {len(questions)} questions; server {args.base_url} "
          f"model {args.model}; cache {args.cache_dir}", flush=True)  # fmt: skip

    plan: dict[str, Any] = {}
    if train_done(args, train, cands, progs):
        plan["chosen"] = choose_setting(args, train, cands, progs, quiet=True)[0]
    if not args.offline:
        stats = asyncio.run(sample_all(args, train, questions, cands, progs, plan))
        print(f"sampling: {stats}", flush=True)
    if not train_done(args, train, cands, progs):
        print("train questions incomplete: rerun to finish sampling")
        return
    chosen, _, _ = choose_setting(args, train, cands, progs)
    report_study(args, study, questions, progs, chosen)


if __name__ == "__main__":
    main()
