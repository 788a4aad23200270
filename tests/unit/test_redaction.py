"""Redaction by meaning (names that say credential) and by shape (a scanner's patterns)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agentrun.tool.redaction import MASK, redact, redact_value, sensitive_name
from tests.support.secrets_corpus import CORPUS, EVIDENCE


@pytest.mark.parametrize(("kind", "line", "secret"), CORPUS, ids=[c[0] for c in CORPUS])
def test_every_corpus_line_is_masked(kind: str, line: str, secret: str) -> None:
    out = redact(line)
    assert secret not in out and MASK in out
    assert redact(out) == out  # masking again changes nothing


@pytest.mark.parametrize("line", EVIDENCE)
def test_ordinary_evidence_is_left_alone(line: str) -> None:
    assert redact(line) == line


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("connecting with password=hunter2", "hunter2"),
        ('{"api_key": "abc123def456"}', "abc123def456"),
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("postgres://app:pa55word@db:5432/x", "pa55word"),
        ("key AKIAABCDEFGHIJKLMNOP used", "ABCDEFGHIJKLMNOP"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("DB_PASSWORD: 's3cr3t'", "s3cr3t"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----", "MIIEabc"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEclipped", "MIIEclipped"),  # cut before its END
        # a log read from its tail: the key's BEGIN line was cut off
        ("MIIEcut0ff\nQUJDRA==\n-----END RSA PRIVATE KEY-----\nnext", "MIIEcut0ff"),
        ('{"out": "x\\nMIIEesc4ped\\n-----END PRIVATE KEY-----"}', "MIIEesc4ped"),
        ('"env": "DB_PASSWORD=nested1"', "nested1"),  # a pair inside another pair's value
        ('x="--password=ok" password="two words"', "two words"),
        ('{"log": "token=abc\\nnext line"}', "abc"),
        ("    args:\n    - --db-password\n    - yamlArgValue", "yamlArgValue"),
    ],
)
def test_redact_masks_credentials(text: str, hidden: str) -> None:
    out = redact(text)
    assert hidden not in out and MASK in out


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("api_key", True),
        ("apiKey", True),
        ("access-key", True),
        ("private_key", True),
        ("KEY", True),
        ("AccountKey", True),
        ("x-api-key", True),
        ("DB_PASSWORD", True),
        ("mysqlpassword", True),
        ("clientSecret", True),
        ("OAuthToken", True),
        ("AUTH", True),
        ("credentials", True),
        ("--db-token", True),
        ("keyboard", False),
        ("monkey", False),
        ("tokenizer", False),
        ("author", False),
        ("prompt_tokens", False),
        ("passed", False),
        # Kubernetes' own `key` field (selectors, tolerations, secretKeyRef.key), AWS tags
        ("key", False),
        ("Key", False),
        # references to a credential, not the credential: kept as evidence
        ("secretName", False),
        ("secretKeyRef", False),
        ("passwordSecretRef", False),
        ("tokenPath", False),
        ("DB_PASSWORD_FILE", False),
        ("PWD", False),
        ("topologyKey", False),
        ("secretNamespace", False),
        ("PUBLIC_KEY", False),
    ],
)
def test_sensitive_names_by_word_part(name: str, sensitive: bool) -> None:
    assert sensitive_name(name) is sensitive


POD: dict[str, Any] = {
    "kind": "Pod",
    "metadata": {
        "name": "web-1",
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                {"spec": {"containers": [{"env": [{"name": "API_TOKEN", "value": "annot-tok"}]}]}}
            )
        },
    },
    "spec": {
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "web",
                "args": ["--db-password", "argPassw0rd", "--port", "80"],
                "env": [
                    {"name": "DB_PASSWORD", "value": "hunter2"},
                    {"name": "KEY", "value": "k-value-1"},
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "u"}}},
                ],
                "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
            }
        ],
        "volumes": [{"name": "tls", "secret": {"secretName": "web-tls"}}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web"}],
        "imagePullSecrets": [{"name": "regcred"}],
    },
}


def test_a_pod_spec_keeps_its_shape_and_loses_its_literal_credentials() -> None:
    out = redact_value(POD)
    text = json.dumps(out)
    for secret in ("hunter2", "k-value-1", "argPassw0rd", "annot-tok"):
        assert secret not in text
    container = out["spec"]["containers"][0]
    assert container["env"][0] == {"name": "DB_PASSWORD", "value": MASK}
    assert container["env"][1] == {"name": "KEY", "value": MASK}
    assert container["env"][2] == {"name": "LOG_LEVEL", "value": "debug"}
    assert container["env"][3] == POD["spec"]["containers"][0]["env"][3]  # a reference
    assert container["args"] == ["--db-password", MASK, "--port", "80"]
    # Evidence stays: where secrets come from, tolerations, pull secrets, flags.
    assert out["spec"]["volumes"] == POD["spec"]["volumes"]
    assert out["spec"]["tolerations"] == POD["spec"]["tolerations"]
    assert out["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert out["spec"]["automountServiceAccountToken"] is False


def test_values_under_sensitive_keys_are_masked_whatever_they_look_like() -> None:
    value = {
        "DB_PASSWORD": "x",
        "apiKey": 12345,
        "auth": {"token": "plain"},
        "tls.key": "LS0tLS1CRUdJTg==",
        "enabled": True,
        "password": "",
        "a": ["token=xyz123"],
        "n": 1,
    }
    assert redact_value(value) == {
        "DB_PASSWORD": MASK,
        "apiKey": MASK,
        "auth": {"token": MASK},
        "tls.key": MASK,
        "enabled": True,
        "password": "",  # nothing to hide
        "a": ["token=****"],
        "n": 1,
    }


def test_name_value_pairs_in_other_spellings() -> None:
    assert redact_value({"Name": "DB_PASS", "Value": "p"}) == {"Name": "DB_PASS", "Value": MASK}
    assert redact_value({"key": "api-key", "value": "v"}) == {"key": "api-key", "value": MASK}
    tag = {"Key": "Name", "Value": "web"}
    assert redact_value(tag) == tag


def test_a_secret_object_loses_all_its_data() -> None:
    secret = {"kind": "Secret", "data": {"username": "YWRtaW4=", "ca.crt": "LS0t"}, "type": "x"}
    out = redact_value(secret)
    assert out["data"] == {"username": MASK, "ca.crt": MASK} and out["type"] == "x"


def test_masked_json_text_is_still_json() -> None:
    """The operator masks a tool's whole stdout before parsing its envelope: masking must
    not break JSON, including JSON escaped inside a JSON string."""
    doc = {
        "password": 12345,
        "token": "t0k",
        "env": [{"name": "DB_PASSWORD", "value": "pairval"}],
        "nested": json.dumps({"secret": "inner", "apiKey": 7}),
        "log": "Authorization: Bearer abcdefgh123 password=p1\nnext",
    }
    for text in (json.dumps(doc), json.dumps(doc, indent=2)):
        out = redact(text)
        parsed = json.loads(out)
        for secret in ("12345", "t0k", "pairval", "inner", "abcdefgh123", "p1\\n"):
            assert secret not in out, secret
        assert parsed["env"] == [{"name": "DB_PASSWORD", "value": MASK}]
        assert json.loads(parsed["nested"]) == {"secret": MASK, "apiKey": MASK}


def test_json_inside_a_string_value_is_masked_by_structure() -> None:
    annotation = json.dumps({"env": [{"name": "API_TOKEN", "value": "abc"}], "n": 1})
    out = redact_value({"annotations": {"last-applied": annotation}})
    assert json.loads(out["annotations"]["last-applied"]) == {
        "env": [{"name": "API_TOKEN", "value": MASK}],
        "n": 1,
    }
    plain = json.dumps({"replicas": 2})
    assert redact_value({"a": plain}) == {"a": plain}  # unchanged, byte for byte


MEGABYTE = 1 << 20
# Long lines built to make a backtracking pattern go quadratic or worse.
ADVERSARIAL = {
    "letters": "y" * MEGABYTE,
    "pairs": "a=" * (MEGABYTE // 2),
    "sensitive pairs": "KEY:" * (MEGABYTE // 4),
    "open quote": '"password": "' + "x" * MEGABYTE,
    "escaped": '\\"password\\": \\"' + "x\\n" * (MEGABYTE // 3),
    "yaml names": "name: DB_PASSWORD\n" * (MEGABYTE // 18),
    "json names": '{"name": "DB_PASSWORD", "value": "' * (MEGABYTE // 35),
    "pem heads": "-----BEGIN PRIVATE KEY-----" * (MEGABYTE // 27),
    "pem tails": "-----END PRIVATE KEY-----\n" * (MEGABYTE // 26),
    "pem body": "QUJD\n" * (MEGABYTE // 5) + "-----END PRIVATE KEY-----",
    "jwt head": "eyJ" + "a" * MEGABYTE,
    "url": "://a:" * (MEGABYTE // 5),
    "bearer": "Bearer " * (MEGABYTE // 7),
    "authorization": "Authorization: " * (MEGABYTE // 15),
    "secret": ("secret " + "A" * 39 + " ") * (MEGABYTE // 47),
    "flags": "--password " * (MEGABYTE // 11),
    "dashes": "a-" * (MEGABYTE // 2),
    "colons": ":" * MEGABYTE,
    "newlines": "\n" * MEGABYTE,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=list(ADVERSARIAL))
def test_redaction_is_linear_on_one_megabyte_lines(text: str) -> None:
    # Each takes well under a second; a quadratic pattern would take minutes.
    start = time.monotonic()
    redact(text)
    assert time.monotonic() - start < 5
