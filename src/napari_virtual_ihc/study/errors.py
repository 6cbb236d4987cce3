"""Typed errors of the reader-study package, so the CLI and the widget can say what went wrong."""


class StudyError(Exception):
    """Base class for every reader-study error."""


class CaseTableError(StudyError):
    """The table of cases given to the builder is malformed (missing column, unreadable file...)."""


class BundleError(StudyError):
    """A study bundle is missing, incomplete, tampered with or points outside itself."""


class OrderingError(StudyError):
    """No reading order satisfies the requested minimum gap."""


class WashoutError(StudyError):
    """A later session was opened before its washout period ended."""


class ReaderError(StudyError):
    """The reader ID is unknown to this bundle or does not match the answer store."""


class StoreError(StudyError):
    """The answer store is unusable (wrong study, wrong reader, corrupt)."""


class AnswerImportError(StudyError):
    """A CSV of answers from another tool could not be imported."""
