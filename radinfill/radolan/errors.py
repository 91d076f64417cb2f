"""The one exception type every RADOLAN read or decode failure raises."""

from __future__ import annotations


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
    """

    def __init__(self, reason: str, *, source: str = "<bytes>", offset: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.offset = offset
        where = source if offset is None else f"{source} at byte {offset}"
        super().__init__(f"{where}: {reason}")

    def with_source(self, source: str) -> RadolanError:
        """Return the same error attributed to ``source`` (used when a reader knows the path)."""
        if self.source != "<bytes>":
            source = f"{source}: {self.source}"
        return RadolanError(self.reason, source=source, offset=self.offset)
