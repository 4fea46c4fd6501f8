"""Secrets (state/secrets.py): found in configs, masked in text and documents."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from state.secrets import SENSITIVE, Redactor, find_secrets, is_secret_key

SQL_PASSWORD = "Sup3rS3cret!"
SQL = f"Server=tcp:db.example.net,1433;Database=crm;User Id=dstream;PWD={SQL_PASSWORD};Encrypt=yes"
ASB_KEY = "abcDEF123+/xyz="
ASB = f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={ASB_KEY}"
STORAGE_KEY = "QUJDREVGR0hJSktMTU5PUA=="
STORAGE = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={STORAGE_KEY};EndpointSuffix=core.windows.net"

CONFIG: dict[str, Any] = {
    "connection_string": SQL,
    "servicebus": ASB,  # not a secret-looking key: found by its AccountKey=/SharedAccessKey= fragment
    "storage": STORAGE,
    "directory": "out",
    "tables": ["Persons", "Orders"],
    "count": 5,
    "fsync": True,
    "auth": {"client_secret": "client-secret-value", "list": [{"password": "hunter22"}], "tenant": "contoso"},
    "api_token": "tok-123456",
}


def test_is_secret_key() -> None:
    for key in ("password", "db_passwd", "PWD", "client_secret", "api_token", "AccountKey", "access_key", "connection_string",
                "connectionString", "sas", "credentials"):
        assert is_secret_key(key), key
    for key in ("directory", "tables", "path", "file_template", "fsync", "count", "namespace", "queue_name", "resource_group"):
        assert not is_secret_key(key), key


def test_find_secrets_by_key_and_by_credential_fragment() -> None:
    found = find_secrets(CONFIG)
    assert SQL in found  # whole value under a secret-looking key
    assert SQL_PASSWORD in found  # PWD=... inside it
    assert ASB_KEY in found  # SharedAccessKey=... under an ordinary key
    assert STORAGE_KEY in found  # AccountKey=...
    assert "client-secret-value" in found and "hunter22" in found and "tok-123456" in found
    assert ASB not in found and STORAGE not in found, "ordinary keys: only the credential fragment is secret"
    for ordinary in ("out", "Persons", "Orders", "contoso", "acct", "RootManageSharedAccessKey"):
        assert ordinary not in found, ordinary


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Server=x;Password=p4ssw0rd;", "p4ssw0rd"),
        ("server=x;pwd = spaced-out ;", "spaced-out"),
        ("https://acct.blob.core.windows.net/c?sv=2024&sig=AbCd%2Bef", "AbCd%2Bef"),
        ("Endpoint=sb://x/;SharedAccessSignature=SharedAccessSignature sr=x", "SharedAccessSignature sr=x"),
        ("ClientSecret=oh-so-secret", "oh-so-secret"),
        ("accountkey=lowercase==", "lowercase=="),
    ],
)
def test_credential_fragments(text: str, secret: str) -> None:
    assert secret in find_secrets({"dsn": text})


def test_short_values_are_not_secrets_in_text() -> None:
    assert find_secrets({"password": "abc", "url": "PWD=xy;"}) == set()


def test_find_secrets_ignores_non_strings() -> None:
    assert find_secrets({"token": 12345678, "key": None, "password": ["list-secret"]}) == {"list-secret"}


def test_redactor_text_masks_every_occurrence() -> None:
    redactor = Redactor(find_secrets(CONFIG))
    line = f"connecting with {SQL} (password {SQL_PASSWORD}); queue key {ASB_KEY}, again {ASB_KEY}; hunter22 hunter22"
    masked = redactor.text(line)
    for secret in (SQL, SQL_PASSWORD, ASB_KEY, "hunter22"):
        assert secret not in masked, secret
    assert masked == f"connecting with {SENSITIVE} (password {SENSITIVE}); queue key {SENSITIVE}, again {SENSITIVE}; {SENSITIVE} {SENSITIVE}"


def test_redactor_text_masks_a_whole_connection_string_first() -> None:
    assert Redactor(find_secrets(CONFIG)).text(f"error in {SQL}") == f"error in {SENSITIVE}"


def test_redactor_text_masks_unknown_credentials_by_pattern() -> None:
    assert Redactor().text("login failed for Server=x;Password=never-seen;Database=y") == f"login failed for Server=x;Password={SENSITIVE};Database=y"


def test_redactor_text_leaves_ordinary_text() -> None:
    line = "created out/Persons_cdc_events.jsonl (3 streams: Persons, Orders, Customers)"
    assert Redactor(find_secrets(CONFIG)).text(line) == line


def test_redactor_secrets_with_regex_characters() -> None:
    secret = "a+b*c?(d)[e]$^"
    assert Redactor([secret]).text(f"x {secret} y") == f"x {SENSITIVE} y"


def test_redactor_add() -> None:
    redactor = Redactor(["first-secret"])
    redactor.add(["later-secret", ""])
    assert redactor.text("first-secret later-secret") == f"{SENSITIVE} {SENSITIVE}"
    assert redactor.text("") == ""


def test_redactor_document_masks_secrets_and_keeps_ordinary_values() -> None:
    original = copy.deepcopy(CONFIG)
    doc = Redactor(find_secrets(CONFIG)).document(CONFIG)
    assert CONFIG == original, "document() must return a copy"
    assert doc["connection_string"] == SENSITIVE
    assert doc["servicebus"] == ASB.replace(ASB_KEY, SENSITIVE)
    assert doc["storage"] == STORAGE.replace(STORAGE_KEY, SENSITIVE)
    assert doc["auth"] == {"client_secret": SENSITIVE, "list": [{"password": SENSITIVE}], "tenant": "contoso"}
    assert doc["api_token"] == SENSITIVE
    assert doc["directory"] == "out"
    assert doc["tables"] == ["Persons", "Orders"]
    assert doc["count"] == 5 and doc["fsync"] is True


def test_redactor_document_masks_secret_values_under_ordinary_keys() -> None:
    redactor = Redactor(find_secrets(CONFIG))
    message = {"type": "error", "message": f"cannot connect: {SQL}", "detail": {"attempts": [f"key {ASB_KEY}"]}}
    doc = redactor.document(message)
    assert doc == {"type": "error", "message": f"cannot connect: {SENSITIVE}", "detail": {"attempts": [f"key {SENSITIVE}"]}}


def test_redactor_document_masks_short_values_under_secret_keys() -> None:
    """A document field named like a secret is masked whatever its length: state and plans never hold one."""
    doc = Redactor().document({"password": "abc", "pwd": "x", "directory": "abc"})
    assert doc == {"password": SENSITIVE, "pwd": SENSITIVE, "directory": "abc"}


# --- gaps: braced ODBC values, cut texts, escaped forms (issue 8, S2) ----------------


@pytest.mark.parametrize(
    ("connection", "secret_parts"),
    [
        ("Driver={ODBC Driver 18};Server=db;PWD={hun;ter2-secret};Encrypt=yes", ["hun", "ter2-secret"]),
        ("Server=db;Password={pa}}ss;word-x};Encrypt=yes", ["pa}}ss", "word-x", "pa}ss"]),
        ("Server=db;PWD={unterminated;rest-of-secret", ["unterminated", "rest-of-secret"]),
    ],
)
def test_braced_odbc_values_are_masked_past_the_semicolon(connection: str, secret_parts: list[str]) -> None:
    redactor = Redactor(find_secrets({"server": connection}))
    for text in (f"login failed for {connection}", connection):
        masked = redactor.text(text)
        for part in secret_parts:
            assert part not in masked, masked
    assert "Encrypt=yes" in redactor.text(connection) or "unterminated" in connection


def test_a_braced_password_is_masked_as_the_driver_reads_it() -> None:
    redactor = Redactor(find_secrets({"dsn": "Server=db;PWD={a}}b;c-secret}"}))
    assert "a}b;c-secret" not in redactor.text("driver says: password a}b;c-secret was rejected")


def test_snippet_redacts_before_cutting() -> None:
    secret = "tok-1234567890"
    redactor = Redactor([secret])
    line = "x" * 70 + f" token={secret} and more"
    snippet = redactor.snippet(line, 80)
    assert len(snippet) <= 80
    assert "tok-1234" not in snippet and "tok-" not in snippet, snippet


def test_snippet_masks_a_trailing_partial_secret() -> None:
    secret = "tok-1234567890"
    redactor = Redactor([secret])
    already_cut = "provider said: tok-123456"  # cut by someone else, inside the secret
    assert "tok-1234" not in redactor.snippet(already_cut, 80)
    assert redactor.text(already_cut, cut=True).endswith(SENSITIVE)
    assert redactor.snippet("nothing secret here", 80) == "nothing secret here"


@pytest.mark.parametrize("render", [repr, ascii, lambda s: repr(s.encode("utf-8")), lambda s: str(s.encode("utf-8"))])
def test_escaped_forms_of_a_non_ascii_secret_are_masked(render: Any) -> None:
    secret = "pässwörd-ñ-秘密"
    redactor = Redactor([secret])
    masked = redactor.text(f"error: {render(secret)}")
    assert "ss" not in masked.replace("(sensitive)", ""), masked


def test_raw_bytes_are_decoded_not_repred() -> None:
    secret = "pässwörd-ñ"
    redactor = Redactor([secret])
    assert secret not in redactor.raw(f"bad line {secret}".encode())
    assert redactor.raw(b"\xff plain") == "\\xff plain"
    assert len(redactor.raw(b"y" * 200, 80)) <= 80


def test_a_credential_inside_a_json_document_does_not_swallow_the_rest() -> None:
    redactor = Redactor(["Pa55+w0rd/Zq9xK"])
    document = '{\n  "note": "PWD=Pa55+w0rd/Zq9xK",\n  "kept": "yes",\n  "odbc": "PWD={unterminated"\n}'
    masked = redactor.text(document)
    assert json.loads(masked) == {"note": "PWD=(sensitive)", "kept": "yes", "odbc": "PWD=(sensitive)"}, masked
