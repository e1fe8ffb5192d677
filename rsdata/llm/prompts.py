"""Prompts built from fact phrases, with the answer pre-filled.

Measured with the embedded SmolLM2-135M: fed raw statistics as JSON it invents objects even for
empty tiles; fed short fact phrases written by code ("seven buildings on the right; farmland
covering most of the image") and an answer that already begins ("This aerial image shows"), it
mostly copies and joins the phrases. Few-shot examples were copied verbatim, so there are none.

A prompt is a list of chat messages plus a ``prefill`` (the start of the answer). A retry
repeats the conversation with the rejected answer and the validator's complaints appended.
:data:`PROMPT_VERSION` changes whenever the wording changes, so cached generations of an older
prompt are never reused for a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rsdata.llm.facts import Fact

PROMPT_VERSION = "facts.v1"

SYSTEM = (
    "You rewrite lists of facts about an aerial image as plain English. You keep every fact "
    "exactly and add no other words about the scene: no places, objects, numbers, sizes, "
    "positions or relations that are not in the facts."
)


@dataclass(frozen=True)
class Style:
    """How a caption should read: instruction, pre-filled answer start, length limits."""

    name: str
    instruction: str
    prefill: str
    max_sentences: int
    max_words: int
    max_new_tokens: int


STYLES: dict[str, Style] = {
    "short": Style("short", "Write one sentence.", "This aerial image shows", 1, 45, 48),
    "detailed": Style(
        "detailed",
        "Write one or two sentences that mention every fact.",
        "This aerial image shows",
        2,
        70,
        72,
    ),
    "question": Style(
        "question",
        "Answer in one sentence.",
        "What does this aerial image show? It shows",
        2,
        55,
        48,
    ),
}


@dataclass(frozen=True)
class Prompt:
    """Chat messages and the answer's pre-filled start; hashable into a cache key."""

    messages: tuple[tuple[str, str], ...]
    prefill: str
    style: str
    facts: tuple[Fact, ...] = field(default=())

    def chat(self) -> list[dict[str, str]]:
        """The messages in the chat-completions format."""
        return [{"role": role, "content": content} for role, content in self.messages]

    def key_data(self) -> dict[str, object]:
        """What identifies the prompt in the generation cache."""
        return {"messages": [list(m) for m in self.messages], "prefill": self.prefill}


def facts_message(facts: list[Fact] | tuple[Fact, ...], style: Style) -> str:
    return "; ".join(f.text for f in facts) + "\n" + style.instruction


def build_prompt(facts: list[Fact], style: str = "short") -> Prompt:
    """The first prompt for a sample's facts."""
    st = STYLES[style]
    messages = (("system", SYSTEM), ("user", facts_message(facts, st)))
    return Prompt(messages=messages, prefill=st.prefill, style=style, facts=tuple(facts))


def retry_prompt(prompt: Prompt, answer: str, complaints: list[str]) -> Prompt:
    """The prompt for another try: the rejected answer and what was wrong with it."""
    st = STYLES[prompt.style]
    said = "; ".join(complaints[:4]) or "it does not match the facts"
    feedback = (
        f"That is wrong: {said}. Use only these facts: "
        f"{'; '.join(f.text for f in prompt.facts)}\n{st.instruction}"
    )
    messages = prompt.messages + (("assistant", answer), ("user", feedback))
    return Prompt(messages=messages, prefill=st.prefill, style=prompt.style, facts=prompt.facts)


def complete_answer(prefill: str, continuation: str) -> str:
    """The caption from the pre-filled start and what the model wrote after it.

    Servers that ignore a pre-filled assistant message answer from scratch: an answer that
    already starts with the prefill, or with a capital letter, is taken as it is.
    """
    text = continuation.strip()
    if not prefill:
        return text
    if text.lower().startswith(prefill.lower()):
        return text
    if text[:1].isupper():
        return text
    joiner = "" if text[:1] in ",.;:" else " "
    return (prefill + joiner + text).strip()
