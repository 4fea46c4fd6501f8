"""Secrets from the environment never leak: not in any output, state, plan or checkpoint file, nor in argv.

The output provider (providers/secret_output.py) echoes its secret config into
its stderr, a change's `after`, a resource id and attributes, a warning, a
status and an error; dstream must mask every one of them: in what it shows,
every known secret; in what it stores, values under secret keys and credential
assignments (`SharedAccessKey=...`), so that data it acts on is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from ._support import copy_provider, describe, error_line, generator_input, ok, write_task

SHARED_KEY = "S3cr3tValue123=="
CONNECTION = f"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey={SHARED_KEY}"
PASSWORD = "Pa55+w0rd/Zq9xK"
SECRETS = (SHARED_KEY.rstrip("="), CONNECTION, PASSWORD)
ENV = {"SECRET_CONN": CONNECTION, "DB_PASSWORD": PASSWORD}
OWN_FILES = {"delivered.jsonl"}  # written by the provider itself from the data it was sent
OUTPUT_CONFIG = """      connection_string = "{{ env \\"SECRET_CONN\\" }}"
      password          = "{{ env \\"DB_PASSWORD\\" }}\""""


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_secrets_never_leak(dstream, tmp_path: Path) -> None:
    copy_provider("secret_output.py", tmp_path)
    output = f'    provider_path = "./secret_output.py"\n    config {{\n{OUTPUT_CONFIG}\n    }}'
    write_task(tmp_path, "secretive", generator_input(5), output)
    assert not leaks((tmp_path / "task.hcl").read_text())

    results: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def cli(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = dstream(*args, env={**ENV, **(extra or {})})
        results.append((" ".join(args), result))
        return result

    ok(cli("validate", "task.hcl"))
    plan_text = ok(cli("plan", "task.hcl"))
    assert 'output.connection["main"] will be created' in plan_text.stdout
    assert "(sensitive)" in plan_text.stdout, "the provider's echo of the secret must arrive, masked"
    assert "Warning: output provider './secret_output.py': talking to (sensitive)" in plan_text.stderr
    plan = json.loads(ok(cli("plan", "--json", "task.hcl")).stdout)
    after = plan["resource_changes"][0]["after"]
    assert after["connection_string"] == "(sensitive)" and after["password"] == "(sensitive)"
    assert after["endpoint"] == "endpoint of (sensitive)"
    ok(cli("plan", "--out", "saved.plan", "task.hcl"))
    (tmp_path / "SECRET_FAIL").touch()
    error_line(cli("plan", "task.hcl"), 5, "cannot connect to (sensitive) with password (sensitive)")
    (tmp_path / "SECRET_FAIL").unlink()
    init = ok(cli("init", "task.hcl"))
    assert "Resources: 1 added" in init.stdout
    status = json.loads(ok(cli("status", "--json", "task.hcl")).stdout)
    assert status["resources"][0]["id"] == "conn:Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=(sensitive)"  # as stored
    assert status["resources"][0]["status"] == {"status": "connected", "endpoint": "endpoint of (sensitive) with password (sensitive)",
                                                "credential": "(sensitive)"}
    ok(cli("status", "task.hcl"))
    ok(cli("state", "show", "task.hcl"))
    ok(cli("state", "show", "task.hcl", 'output.connection["main"]'))
    run = ok(cli("run", "--once", "task.hcl"))
    assert "[output:./secret_output.py] secret-output: run: delivered 5 lines to (sensitive) (password (sensitive))" in run.stderr
    assert len((tmp_path / "delivered.jsonl").read_text().splitlines()) == 5
    destroy = ok(cli("destroy", "--auto-approve", "task.hcl"))
    assert "Resources: 1 destroyed." in destroy.stdout

    for command, result in results:
        assert not leaks(result.stdout + result.stderr), f"dstream {command} leaked {leaks(result.stdout + result.stderr)}\n{describe(result)}"

    scanned = []
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name not in OWN_FILES):
        found = leaks(path.read_bytes().decode("utf-8", "replace"))
        assert not found, f"{path.relative_to(tmp_path)} holds {found}"
        scanned.append(path.relative_to(tmp_path).as_posix())
    assert {"saved.plan", ".dstream/secretive.state.json", "provider_argv.log"} <= set(scanned), scanned

    # the provider did get the real values (on stdin: its argv holds none of them)
    digests = f"{hashlib.sha256(CONNECTION.encode()).hexdigest()} {hashlib.sha256(PASSWORD.encode()).hexdigest()}"
    seen = (tmp_path / "provider_seen.log").read_text().splitlines()
    assert {line.split(" ", 1)[0] for line in seen} >= {"validate", "plan", "init", "status", "run", "destroy"}
    assert all(line.split(" ", 1)[1] == digests for line in seen), seen
    argv = (tmp_path / "provider_argv.log").read_text().splitlines()
    assert len(argv) == len(seen) and all("secret_output.py" in line for line in argv), argv


def test_secret_with_json_special_characters_is_masked_in_provider_logs(dstream, tmp_path: Path) -> None:
    """A password with a quote and a backslash: a provider that logs its config as JSON writes it escaped.

    The escaped spelling is the same secret; it must be masked like the plain one.
    """
    password = 'Pa55"w0rd\\Zq9'
    forms = (password, json.dumps(password)[1:-1])  # as written, and as it appears inside a JSON string
    copy_provider("secret_output.py", tmp_path)
    output = f'    provider_path = "./secret_output.py"\n    config {{\n{OUTPUT_CONFIG}\n    }}'
    write_task(tmp_path, "secretive", generator_input(5), output)

    result = ok(dstream("plan", "task.hcl", env={**ENV, "DB_PASSWORD": password}))
    assert "secret-output: config {" in result.stderr
    text = result.stdout + result.stderr
    assert not [form for form in forms if form in text], f"the password leaked\n{describe(result)}"
