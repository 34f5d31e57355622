"""Refusals, boilerplate and answers in the wrong language: rules plus a language identifier.

A teacher that refuses ("As an AI language model, I cannot see images") or answers in another
language writes fluent text, so an LM's perplexity only flags it when the LM happens to be narrow
(the quickstart's tiny LM); a general LM finds it perfectly probable. These are caught here on
their own: `refusal` (the assistant declines or disclaims), `boilerplate` (chat filler with no
content: "Sure! Here is...", "I hope this helps"), and `language_ok` (1 when every response of at
least `min_words` words is identified as one of `languages` by langid.py's model (py3langid, the
maintained fork on PyPI), and when no response is mostly written in non-Latin script, which also
covers one-word answers such as "红色" that are too short to identify).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op

REFUSAL = re.compile(
    r"\b(?:as an? (?:ai|artificial intelligence|language model|text[- ]based (?:ai|model|assistant))"
    r"|i(?: am|'m) (?:sorry|afraid|unable|not able)|i apologi[sz]e|sorry, (?:but )?i"
    r"|i (?:can ?not|can't|won't|do not|don't) (?:help|assist|see|view|access|provide|answer|determine|identify)"
    r"|(?:unable|not able) to (?:see|view|determine|provide|answer|identify|assist)"
    r"|i (?:do not|don't) have the (?:ability|capability)|(?:please )?(?:describe|upload|provide) the image"
    r"|i cannot (?:be sure|tell)|it is not possible (?:for me )?to (?:tell|determine))", re.IGNORECASE)
BOILERPLATE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|great question)[!,.]|\bi hope (?:this|that) helps\b"
    r"|\blet me know if you (?:have|need)\b|\bfeel free to ask\b|^here(?:'s| is) (?:the|my|an?) (?:answer|response)\b",
    re.IGNORECASE)
LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
ALPHA_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)


def latin_share(text: str) -> float:
    """Share of letters that are Latin (ASCII or Latin-1/Extended); 1.0 for text without letters."""
    letters = LETTER.findall(text)
    if not letters:
        return 1.0
    return sum(ord(c) < 0x250 for c in letters) / len(letters)


@dataclass
class RefusalSettings(OpSettings):
    languages: list[str] = field(default_factory=lambda: ["en"])  # ISO 639-1 codes a response may be in
    min_words: int = 4  # responses with fewer words are not language-identified (too short to tell)
    min_latin: float = 0.5  # for Latin-script languages: below this share of Latin letters = wrong script


@register_op("refusal")
class Refusal(Op):
    Settings = RefusalSettings
    primary = "refusal"

    def __init__(self, settings: RefusalSettings | None = None):
        super().__init__(settings)
        self._ident: Any = None

    def _identify(self, text: str) -> tuple[str, float]:
        if self._ident is None:
            try:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier
            except ImportError:  # pragma: no cover - a declared dependency
                from allava.config import ConfigError

                raise ConfigError("refusal: language identification needs py3langid (pip install py3langid)") from None
            self._ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        lang, prob = self._ident.classify(text)
        return str(lang), float(prob)

    def _language(self, responses: list[str]) -> Stats:
        s = self.settings
        latin = min((latin_share(t) for t in responses), default=1.0)
        latin_langs = not set(s.languages) & {"zh", "ja", "ko", "ru", "ar", "el", "he", "hi", "th", "uk"}
        if latin_langs and latin < s.min_latin:
            return {"language_ok": 0, "latin": latin, "language": "non-latin"}
        long = [t for t in responses if len(ALPHA_WORD.findall(t)) >= s.min_words]
        if not long:
            return {"language_ok": 1, "latin": latin} if responses else {}
        found = [self._identify(t) for t in long]
        bad = [(lang, p) for lang, p in found if lang not in s.languages]
        lang, prob = bad[0] if bad else min(found, key=lambda x: x[1])
        return {"language_ok": int(not bad), "latin": latin, "language": lang, "language_prob": prob}

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out: list[Stats] = []
        for r in batch:
            responses = [t for t in r.responses if t.strip()]
            if not responses:
                out.append({})
                continue
            out.append({"refusal": int(any(REFUSAL.search(t) for t in responses)),
                        "boilerplate": int(any(BOILERPLATE.search(t) for t in responses)),
                        **self._language(responses)})
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s for s in stats if "refusal" in s]
        if not v:
            return {}
        return {"refusals": float(np.mean([s["refusal"] for s in v])),
                "boilerplate": float(np.mean([s["boilerplate"] for s in v])),
                "wrong_language": float(np.mean([1 - s.get("language_ok", 1) for s in v]))}
