"""Error types that name where bad input came from (file, row, field) so users can fix it."""

from __future__ import annotations


class InstructkitError(Exception):
    """Base class for every error the toolkit raises on purpose (the CLI prints these without a traceback)."""


class BadRowError(InstructkitError):
    """One input row cannot be used; carries `file:row: field: reason`."""

    def __init__(self, file: str, row: int | None, field: str, reason: str):
        self.file, self.row, self.field, self.reason = file, row, field, reason
        where = f"{file}:{row}" if row is not None else file
        super().__init__(f"{where}: {field}: {reason}")

    def as_record(self) -> dict:
        """The rejects-file form of this error."""
        return {"file": self.file, "row": self.row, "field": self.field, "reason": self.reason}


class TemplateMaskError(InstructkitError):
    """A chat template whose renderings do not extend each other, so exact masks cannot be derived."""


class HubUnreachableError(InstructkitError):
    """A hub id was given but the Hugging Face hub cannot be reached from this machine."""
