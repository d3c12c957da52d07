"""An LLM judge of an agent's next action: given the conversation and the tools, is this the right call?"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ttc_graph.endpoints.base import ChatMessage, Endpoint, RequestUsage
from ttc_graph.messages import render_transcript, to_langchain_messages
from ttc_graph.verifiers.base import Score, VerificationResult, VerifyItem
from ttc_graph.verifiers.cache import ScoreCache
from ttc_graph.verifiers.judge import LLMJudgeVerifier, check_template

__all__ = ["DEFAULT_ACTION_PROMPT", "DEFAULT_ACTION_SYSTEM_PROMPT", "ActionJudgeVerifier"]

DEFAULT_ACTION_SYSTEM_PROMPT = (
    "You check the next step of an assistant that can call tools. Reply with one word: Yes or No."
)
DEFAULT_ACTION_PROMPT = (
    "Tools the assistant may call:\n{tools}\n\n"
    "Conversation so far:\n{conversation}\n\n"
    "The assistant's proposed next step:\n{action}\n\n"
    "Is this the right next step: the right tool or tools, with correct and complete arguments taken from the"
    " conversation, or rightly no tool call when none fits? Answer Yes or No."
)
"""Placeholders: ``{tools}``, ``{conversation}``, ``{action}``."""


def _tools_text(tools: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for tool in tools:
        fn = tool.get("function", tool)
        spec = {"name": fn.get("name"), "description": fn.get("description", ""), "parameters": fn.get("parameters")}
        lines.append(json.dumps(spec, ensure_ascii=False))
    return "\n".join(lines) or "(none)"


def _action_text(item: VerifyItem) -> str:
    if item.tool_calls:
        return "\n".join(
            f"Call {c.get('name')} with arguments {json.dumps(c.get('args') or {}, ensure_ascii=False)}"
            for c in item.tool_calls
        )
    return f"No tool call; the reply: {item.text.strip() or '(empty)'}"


class ActionJudgeVerifier(LLMJudgeVerifier):
    """An LLM judge of a proposed action, scored by P(Yes) as :class:`LLMJudgeVerifier` scores (logprobs of one
    token at temperature 0, else sampled votes).

    It sees what the acting model saw: the tools, the conversation (tool calls and results included) and the
    proposed calls, or the reply when the candidate calls no tool. One judgement per candidate; equal actions in
    the same conversation are judged once (the cache). Use it with ``selection="weighted"``: the action whose
    candidates' judged scores sum highest wins.
    """

    granularity = "outcome"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        prompt_template: str = DEFAULT_ACTION_PROMPT,
        system_prompt: str | None = DEFAULT_ACTION_SYSTEM_PROMPT,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoint, mode="outcome", system_prompt=system_prompt, **kwargs)
        self.prompt_template = self._checked(prompt_template)
        digest = hashlib.sha1(f"{system_prompt}\x00{self.prompt_template}".encode()).hexdigest()[:10]
        self._scope = f"action-judge:{getattr(endpoint, 'name', type(endpoint).__name__)}:{digest}"

    @staticmethod
    def _checked(template: str) -> str:
        return check_template(template, ("tools", "conversation", "action"), "prompt_template")

    @property
    def name(self) -> str:
        return f"ActionJudgeVerifier({getattr(self.endpoint, 'name', type(self.endpoint).__name__)})"

    def action_messages(self, item: VerifyItem) -> list[ChatMessage]:
        """The judge's chat for one proposed action."""
        conversation = item.conversation or ({"role": "user", "content": item.question},)
        content = self.prompt_template.format(
            tools=_tools_text(item.tools),
            conversation=render_transcript(to_langchain_messages(cast(Sequence[ChatMessage], conversation))),
            action=_action_text(item),
        )
        messages: list[ChatMessage] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": content})
        return messages

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        chats = [self.action_messages(item) for item in items]
        keys = [ScoreCache.key("", (json.dumps(chat, sort_keys=True),), self._scope) for chat in chats]
        found: dict[Any, float] = {}
        todo = list(dict.fromkeys(keys))
        if self.cache is not None:
            found, todo = self.cache.partition(todo)
        sem = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
        chat_of = dict(zip(keys, chats, strict=True))

        async def judge(key: Any) -> Any:
            if sem is None:
                return await self._judge_chat(chat_of[key])
            async with sem:
                return await self._judge_chat(chat_of[key])

        judged = dict(zip(todo, await asyncio.gather(*(judge(k) for k in todo)), strict=True))
        usage = RequestUsage()
        for key, out in judged.items():
            usage.add(out.usage)
            if out.value is not None and self.cache is not None:
                self.cache.store(key, out.value)
        scores = []
        for key in keys:
            if key in found:
                scores.append(Score(found[key]))
            else:
                out = judged[key]
                scores.append(Score(out.value, error=None if out.value is not None else out.error))
        return VerificationResult(scores, usage)
