"""One definition of "secret" for lint and for the DAG docs: what lint flags, the docs hide, and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_provider.spec.load import load_spec
from mlops_provider.spec.secrets import redact

KEYS = ["db_pwd", "passphrase", "auth_key", "api_token", "apiKey", "AWS_SECRET_ACCESS_KEY", "client_secret",
        "password", "max_tokens", "keys", "monkey", "tokenizer_name", "n_estimators", "keyword"]  # fmt: skip
SPEC = """\
version: 1
name: secrets_probe
task: classification
ingest: {{source: data.csv, target: y}}
train:
  estimator: sklearn.linear_model.LogisticRegression
  params:
    {key}: literal-value-1234
"""


@pytest.mark.parametrize("key", KEYS)
def test_lint_flags_exactly_what_the_docs_hide(key: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(key=key))
    loaded = load_spec(spec, project_root=tmp_path, allowed_modules=None)
    flagged = any(i.code == "literal-secret" for i in loaded.issues)
    hidden = "literal-value-1234" not in redact(spec.read_text())
    assert flagged == hidden, (key, flagged, hidden)
    harmless = ("max_tokens", "keys", "monkey", "tokenizer_name", "n_estimators", "keyword")
    assert flagged == (key not in harmless)


def test_the_docs_hide_flow_mappings_and_url_passwords_too() -> None:
    text = "params: {api_token: x1, n: 3}\nurl: postgres://ann:pw-9@db/x\nLOG_LEVEL: info\n"
    shown = redact(text)
    assert "x1" not in shown and "n: 3" in shown and "pw-9" not in shown and "ann:***@db" in shown
    assert "LOG_LEVEL: info" in shown
