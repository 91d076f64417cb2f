"""The one exception type every RADOLAN read or decode failure raises."""

from __future__ import annotations

from typing import Literal, get_args

#: What kind of failure an error is; a small closed set, so that it can label metrics and
#: quarantine notes: ``truncated`` (fewer bytes than the product says it has: possibly still
#: being written), ``oversized`` (more bytes than it says, or beyond a size bound),
#: ``wrong_grid`` (a grid size the codec does not know, or data that does not fit the stated
#: grid), ``unsupported`` (well-formed, but a product or layout this codec does not read) and
#: ``corrupt`` (everything else: garbled headers, broken containers).
Kind = Literal["truncated", "oversized", "wrong_grid", "unsupported", "corrupt"]
KINDS: tuple[Kind, ...] = get_args(Kind)


class RadolanError(ValueError):
    """A RADOLAN product could not be read or decoded.

    Parameters
    ----------
    reason
        What is wrong, in words an operator can act on.
    source
        The file (or archive member) the bytes came from; ``"<bytes>"`` when unknown.
    offset
        Byte offset of the problem inside the product, if it has one.
    kind
        The failure's class, one of :data:`KINDS` (see :data:`Kind`); callers branch and
        label on it instead of parsing ``reason``.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str = "<bytes>",
        offset: int | None = None,
        kind: Kind = "corrupt",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"RadolanError kind must be one of {KINDS}, got {kind!r}")
        self.reason = reason
        self.source = source
        self.offset = offset
        self.kind: Kind = kind
        where = source if offset is None else f"{source} at byte {offset}"
        super().__init__(f"{where}: {reason}")

    def with_source(self, source: str) -> RadolanError:
        """Return the same error attributed to ``source`` (used when a reader knows the path)."""
        if self.source != "<bytes>":
            source = f"{source}: {self.source}"
        return RadolanError(self.reason, source=source, offset=self.offset, kind=self.kind)
