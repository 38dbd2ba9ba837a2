"""The SQLite backend with ``BEGIN IMMEDIATE`` and start-up pragmas, for Django < 5.1."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        for statement in self.settings_dict["PRAGMAS"].split(";"):
            if statement.strip():
                connection.execute(statement)
        return connection

    def _start_transaction_under_autocommit(self) -> None:
        self.cursor().execute("BEGIN IMMEDIATE")
