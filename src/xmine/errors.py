"""Errors and warnings raised by xmine.

Every error a user can cause is an :class:`XmineError`; the command line prints
its message on one line and exits with status 1 (``--debug`` shows the
traceback). A message names the subject (file, query, column, row), the bad
value and what to do about it.

Partial success is a warning, not an error: an empty result is an empty table
with the right columns plus a :class:`NoResultsWarning`, a result cut by a
service limit is returned with a :class:`TruncatedWarning`.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "InputError",
    "NoResultsWarning",
    "QueryError",
    "ServiceError",
    "StaleCacheWarning",
    "TruncatedWarning",
    "XmineError",
    "XmineWarning",
]


class XmineError(Exception):
    """Base class of every error xmine raises on purpose."""


class InputError(XmineError, ValueError):
    """A file, table, parameter or configuration value is unusable."""


class QueryError(XmineError):
    """A catalogue query (ADQL or SQL) was refused or failed.

    Parameters
    ----------
    message : str
        What went wrong and what to do.
    url : str, optional
        The service that was asked.
    adql : str, optional
        The query text that was sent.
    """

    def __init__(self, message: str, *, url: str | None = None, adql: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.adql = adql


class ServiceError(XmineError):
    """A remote service could not be reached or answered with an HTTP error.

    Parameters
    ----------
    message : str
        What went wrong and what to do.
    url : str, optional
        The address that was asked.
    status : int, optional
        The HTTP status code, when there was one.
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class CacheError(XmineError):
    """The DuckDB store (catalogue cache or results) cannot be used as asked."""


class XmineWarning(UserWarning):
    """Base class of xmine's warnings."""


class NoResultsWarning(XmineWarning):
    """A query or selection matched nothing; an empty, typed table is returned."""


class TruncatedWarning(XmineWarning):
    """A result was cut by a row limit (maxrec); raise the limit or tile the query."""


class StaleCacheWarning(XmineWarning):
    """A cached result is past its expiry and was used because xmine is offline."""
