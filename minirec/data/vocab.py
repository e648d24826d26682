"""A vocabulary: the two-way map between tokens (strings) and ids (integers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["EOS", "PAD", "UNK", "Vocab"]

PAD = "<pad>"
UNK = "<unk>"
EOS = "<eos>"


class Vocab:
    """Tokens numbered ``0 .. len(vocab) - 1``.

    ``tokens[i]`` is the token with id ``i``. If the vocabulary contains ``"<unk>"``,
    :meth:`encode` maps unknown tokens to it; otherwise an unknown token is a
    ``KeyError``.
    """

    def __init__(self, tokens: Sequence[str]):
        self.tokens: list[str] = list(tokens)
        self.ids: dict[str, int] = {token: i for i, token in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            repeated = sorted(t for t, n in Counter(self.tokens).items() if n > 1)
            raise ValueError(f"a vocabulary cannot repeat tokens: {repeated[:10]}")
        self.unk_id: int | None = self.ids.get(UNK)

    @classmethod
    def from_tokens(
        cls,
        tokens: Iterable[str],
        specials: Sequence[str] = (),
        max_size: int | None = None,
        min_freq: int = 1,
    ) -> Vocab:
        """Build a vocabulary from a stream of tokens.

        ``specials`` come first, in the order given (so ``<pad>`` can be id 0). The
        other tokens follow, most frequent first, ties broken alphabetically so the
        result does not depend on the order of the corpus. Tokens seen fewer than
        ``min_freq`` times are left out, and so is everything beyond ``max_size``
        entries (specials included).
        """
        counts = Counter(tokens)
        for special in specials:
            counts.pop(special, None)
        frequent = [token for token, n in counts.items() if n >= min_freq]
        frequent.sort(key=lambda token: (-counts[token], token))
        ordered = list(specials) + frequent
        if max_size is not None:
            if max_size < len(specials):
                raise ValueError(f"max_size={max_size} leaves no room for the specials {list(specials)}")
            ordered = ordered[:max_size]
        return cls(ordered)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.tokens[:5])
        more = ", ..." if len(self) > 5 else ""
        return f"Vocab({len(self)} tokens: [{head}{more}])"

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids of ``tokens`` as a 1-D int64 array (unknown tokens become ``<unk>``)."""
        if self.unk_id is None:
            ids = []
            for token in tokens:
                if token not in self.ids:
                    raise KeyError(f"token {token!r} is not in the vocabulary (no <unk>)")
                ids.append(self.ids[token])
        else:
            ids = [self.ids.get(token, self.unk_id) for token in tokens]
        return np.array(ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``; an id outside ``0 .. len - 1`` is an ``IndexError``."""
        tokens = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise IndexError(f"id {i} is outside the vocabulary (size {len(self)})")
            tokens.append(self.tokens[i])
        return tokens

    def to_dict(self) -> dict:
        """A JSON-friendly description, for saving next to a model's weights."""
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, state: dict) -> Vocab:
        """The inverse of :meth:`to_dict`."""
        return cls(state["tokens"])
