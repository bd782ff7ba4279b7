"""What the shared SQL (``sql_profiles``) needs of a connection: DB-API ``execute`` and
``executemany`` with ``?`` placeholders. ``sqlite3.Connection`` is one as it is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class SqlConnection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...

    def close(self) -> None: ...
