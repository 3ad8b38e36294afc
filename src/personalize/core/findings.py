"""What results say, in sentences with their numbers (the "What we found" section that ends every
notebook): :class:`Findings` holds the sentences and every figure they quote, so a test can check
the text against the results. Built by the notebook-facing layers (reports, privacy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Findings:
    """Sentences with numbers; ``numbers`` holds every figure a sentence quotes."""

    title: str
    sentences: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def add(self, sentence: str, **numbers: Any) -> None:
        self.sentences.append(sentence)
        self.numbers.update(numbers)

    def markdown(self) -> str:
        return f"### {self.title}\n\n" + "\n".join(f"- {s}" for s in self.sentences)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __str__(self) -> str:
        return self.markdown()
