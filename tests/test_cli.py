"""The ``eventfold`` command line: keys, and clear failures for bad configuration."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from eventfold.cli import main


def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_keys_create_prints_the_secret_alone_on_the_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--account", "shop", "--database", database(tmp_path)]) == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("efsk_")
    assert len(last_line) >= len("efsk_") + 43
    assert " " not in last_line


def test_keys_list_shows_keys_but_never_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "create", "--account", "shop", "--database", database(tmp_path)])
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["keys", "list", "--database", database(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "shop" in listing
    assert "key_" in listing
    assert secret not in listing
    assert secret[5:15] not in listing


def test_keys_revoke_marks_the_key_and_unknown_ids_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "create", "--account", "shop", "--database", database(tmp_path)])
    key_id = capsys.readouterr().out.split()[2]
    assert key_id.startswith("key_")
    assert main(["keys", "revoke", key_id, "--database", database(tmp_path)]) == 0
    assert f"revoked key {key_id}" in capsys.readouterr().out
    main(["keys", "list", "--database", database(tmp_path)])
    [row] = [line for line in capsys.readouterr().out.splitlines() if key_id in line]
    assert row.split()[-1] != "-"  # the revoked column holds a time
    assert main(["keys", "revoke", "key_nope", "--database", database(tmp_path)]) == 1
    assert "no key with id" in capsys.readouterr().err


def test_database_url_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTFOLD_DATABASE_URL", database(tmp_path))
    assert main(["keys", "create", "--account", "shop"]) == 0
    assert (tmp_path / "cli.db").exists()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://localhost/db", ["unsupported database URL", "sqlite:///"]),
        ("sqlite:///", ["names no file"]),
        ("sqlite:////no/such/folder/x.db", ["cannot open", "folder exists"]),
    ],
)
def test_bad_database_urls_fail_clearly(
    url: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list", "--database", url]) == 2
    error = capsys.readouterr().err
    assert error.startswith("eventfold: error:")
    for word in words:
        assert word in error


def test_bad_environment_setting_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTFOLD_MAX_BODY_BYTES", "lots")
    assert main(["keys", "list"]) == 2
    assert "EVENTFOLD_MAX_BODY_BYTES='lots' is not a valid int" in capsys.readouterr().err


def test_serve_refuses_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--database", database(tmp_path), "--port", str(port)])
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}: it is already in use" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://localhost", ["unsupported log URL", "nats://host:4222"]),
        ("nats://a:4222,,b:4222", ["empty server between commas"]),
    ],
)
def test_bad_log_urls_fail_clearly(
    url: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--database", database(tmp_path), "--log", url]) == 2
    error = capsys.readouterr().err
    assert error.startswith("eventfold: error:")
    for word in words:
        assert word in error
