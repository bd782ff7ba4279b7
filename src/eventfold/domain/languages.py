"""The two-letter language codes of ISO 639-1, which ``locale`` must be one of."""

from __future__ import annotations

# A block of text rather than 183 quoted strings, to stay readable.
ISO_639_1 = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he
    hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko
    kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd
    ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se
    sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty
    ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """.split()  # noqa: SIM905
)


def _any_case(letters: str) -> str:
    return "".join(sorted({*letters.lower(), *letters.upper()}))


def _pattern(codes: frozenset[str]) -> str:
    """A regular expression matching exactly the codes, in any case (for the OpenAPI
    document, whose patterns have no case-insensitive flag)."""
    by_first: dict[str, str] = {}
    for code in sorted(codes):
        by_first[code[0]] = by_first.get(code[0], "") + code[1]
    alternatives = [
        f"[{_any_case(first)}][{_any_case(seconds)}]" for first, seconds in by_first.items()
    ]
    return "^(?:" + "|".join(alternatives) + ")$"


ISO_639_1_PATTERN = _pattern(ISO_639_1)
