"""Masks credentials in tool output, by meaning and by pattern (pure).

Used by the tool runner on every built-in tool's output and by the operator on everything a
tool Job produced, custom tools included, before it reaches status, Events, ConfigMaps,
notifications or the model.

Two kinds of evidence say "this is a credential":

- **Meaning**: the value sits under a name that says so (``sensitive_name``): a key, an env
  var name, a flag. ``DB_PASSWORD=x``, ``"apiKey": "x"``, ``password: x``,
  ``{"name": "DB_PASSWORD", "value": "x"}``, ``--token x``. Names are judged by word parts
  (``api_key``, ``apiKey``, ``access-key``), so ``keyboard``, ``monkey``, ``tokenizer`` and
  ``author`` stay readable. A name that *refers to* a credential (``secretName``,
  ``secretKeyRef``, ``tokenPath``, ``passwordFile``) keeps its value: it is where to find
  the secret, not the secret, and it is evidence an SRE needs.
- **Shape**: values that are credentials wherever they appear (the kinds a scanner such as
  gitleaks looks for): PEM private keys, JWTs, Authorization headers, URLs with a password,
  cloud and SaaS tokens (AWS, Google, GitHub, GitLab, Slack, OpenAI, Stripe, ...).

Every pattern is linear in the input: bounded repeats, anchors on literal prefixes, and
the name=value pass skips past what it masked instead of re-reading it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

MASK = "****"

# Word parts that make a name sensitive (compared lower case, after splitting the name).
_SENSITIVE_PARTS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pass",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "key",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "credential",
        "credentials",
        "creds",
        "auth",
        "oauth",
        "authorization",
        "cookie",
        "dsn",
    }
)
# ... and one-word compounds ending so: mysqlpassword, clientsecret, authtoken.
_SENSITIVE_ENDINGS = ("password", "passwd", "secret", "token", "apikey", "privatekey")
# A last word part saying the value points at a credential rather than being one.
_REFERENCE_PARTS = frozenset(
    {
        "name",
        "names",
        "namespace",
        "ref",
        "refs",
        "path",
        "file",
        "dir",
        "type",
        "kind",
        "url",
        "uri",
    }
)
# Names that look sensitive but are not: the Kubernetes/AWS field `key` (selectors,
# tolerations, secretKeyRef.key, tags), Kubernetes fields that name a key (a scheduling
# problem shows in topologyKey), and the shell's working directory.
_NOT_SENSITIVE = frozenset(
    {
        "key",
        "Key",
        "keys",
        "Keys",
        "topologyKey",
        "capacityKey",
        "kubeletConfigKey",
        "PWD",
        "OLDPWD",
    }
)
_WORD_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_HARMLESS = frozenset({"", MASK, "true", "false", "null", "none", "yes", "no", "~"})


@lru_cache(maxsize=4096)
def sensitive_name(name: str) -> bool:
    """Whether a key, env var or flag name says its value is a credential."""
    name = name.strip("-_.\"' ")
    if name in _NOT_SENSITIVE or len(name) > 100:
        return False
    parts = [p.lower() for p in _WORD_PARTS.findall(name)]
    if not parts or (len(parts) > 1 and parts[-1] in _REFERENCE_PARTS) or "public" in parts:
        return False
    return any(p in _SENSITIVE_PARTS or p.endswith(_SENSITIVE_ENDINGS) for p in parts)


def _harmless(value: str) -> bool:
    return value.strip().lower() in _HARMLESS


# ---- shapes: credentials wherever they appear ----

_Repl = str | Callable[[re.Match[str]], str]


def _keep_prefix(m: re.Match[str]) -> str:
    return m["p"] + MASK


def _bearer(m: re.Match[str]) -> str:
    # "Bearer authentication" is prose; a token has a digit or a symbol in it.
    value = m["v"]
    return m["p"] + MASK if re.search(r"[0-9._~+/=-]", value) else m[0]


# Provider tokens, by their documented prefixes (one pass); the prefix stays as evidence.
_TOKENS = re.compile(
    "|".join(
        rf"\b(?P<p{i}>{prefix}){rest}"
        for i, (prefix, rest) in enumerate(
            [
                (r"AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9]", r"[A-Z0-9]{16}\b"),  # AWS access key id
                (r"AIza", r"[0-9A-Za-z_-]{35}"),  # Google API key
                (r"gh[pousr]_", r"[A-Za-z0-9]{30,255}"),  # GitHub
                (r"github_pat_", r"[A-Za-z0-9_]{22,255}"),
                (r"gl(?:pat|dt|rt|ptt|cbt|ft|soat|agent)-", r"[A-Za-z0-9_-]{20,255}"),  # GitLab
                (r"xox[abposre]-", r"[A-Za-z0-9-]{10,255}"),  # Slack
                (r"xapp-", r"[A-Za-z0-9-]{10,255}"),
                (r"(?:sk|rk)_(?:live|test)_", r"[A-Za-z0-9]{10,255}"),  # Stripe
                (r"whsec_", r"[A-Za-z0-9]{20,255}"),
                (r"sk-", r"[A-Za-z0-9_-]{20,255}"),  # OpenAI, Anthropic
                (r"npm_", r"[A-Za-z0-9]{36}"),
                (r"hf_", r"[A-Za-z]{34}"),  # Hugging Face
                (r"SG\.", r"[\w-]{22}\.[\w-]{43}"),  # SendGrid
                (r"do[opr]_v1_", r"[a-f0-9]{64}"),  # DigitalOcean
            ]
        )
    )
)
_TOKEN_NEEDLES = (
    "akia", "asia", "abia", "acca", "a3t", "aiza", "gh", "gl", "xox", "xapp-", "_live_",
    "_test_", "whsec_", "sk-", "npm_", "hf_", "sg.", "_v1_",
)  # fmt: skip


def _token(m: re.Match[str]) -> str:
    return m[m.lastgroup or 0] + MASK


# (needles, pattern, replacement): a pass runs only when the lower-cased text holds one of
# its needles, which keeps ordinary text to a few substring searches.
_SHAPES: list[tuple[tuple[str, ...], re.Pattern[str], _Repl]] = [
    # -----BEGIN [RSA|EC|OPENSSH|ENCRYPTED|PGP ...] PRIVATE KEY[ BLOCK]----- ... END, or to
    # the end of a clipped text. Certificates and public keys are not secrets: kept.
    (
        ("private key",),
        re.compile(
            r"-----BEGIN (?P<t>[A-Z0-9 ]{0,40}?)PRIVATE KEY(?P<b> BLOCK)?-----"
            r"[\s\S]*?(?:-----END [A-Z0-9 ]{0,40}?PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
        lambda m: (
            f"-----BEGIN {m['t']}PRIVATE KEY{m['b'] or ''}-----{MASK}"
            f"-----END {m['t']}PRIVATE KEY{m['b'] or ''}-----"
        ),
    ),
    # Webhook URLs carry their credential in the path.
    (
        ("hooks.slack.com",),
        re.compile(
            r"(?P<p>https://hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_+-]+"
        ),
        _keep_prefix,
    ),
    (
        ("discord",),
        re.compile(r"(?P<p>https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/)\S+"),
        _keep_prefix,
    ),
    # scheme://user:password@host (also the empty user of redis://:password@host)
    (
        ("://",),
        re.compile(r"(?P<p>://[^/\s:@\"'\\]{0,256}:)[^/\s@\"'\\]{1,256}(?=@)"),
        _keep_prefix,
    ),
    # Azure SAS signatures in URLs and connection strings
    (("sig=",), re.compile(r"(?P<p>[?&;]sig=)[^&;\s\"'\\]+"), _keep_prefix),
    # Authorization: <scheme> <credentials>, any scheme (Bearer, Basic, token, AWS4-...);
    # the scheme stays as evidence.
    (
        ("authorization",),
        re.compile(
            r"(?P<p>\b(?:proxy-)?authorization(?:\\?[\"'])?[ \t]{0,64}[:=][ \t]{0,64}"
            r"(?:\\?[\"'])?(?:[A-Za-z][\w-]{0,30}[ \t]+)?)[^\s\"'\\,]+",
            re.IGNORECASE,
        ),
        _keep_prefix,
    ),
    (
        ("bearer",),
        re.compile(r"(?P<p>\bbearer[ \t]+)(?P<v>[A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE),
        _bearer,
    ),
    # JWTs (header.payload.signature, the first two base64url JSON)
    (
        ("eyj",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        MASK,
    ),
    (
        ("eyj",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}"),
        MASK,
    ),
    (_TOKEN_NEEDLES, _TOKENS, _token),
    # A 40-character AWS secret access key shortly after "secret" (tables, CLI output,
    # credentials files: forms without a name=value shape).
    (
        ("secret",),
        re.compile(
            r"(?P<p>secret[\w.-]{0,30}?[\s\"':=,|]{1,10})[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
        _keep_prefix,
    ),
]

# ---- meaning: values under sensitive names ----

_Q = r"\\?\""  # a quote, maybe escaped (JSON inside a JSON string)
_JSON_STRING = _Q + r"(?:[^\"\\\n]|\\[^\"\n]){0,4096}" + _Q
# {"name": "DB_PASSWORD", "value": "x"} (env vars, Helm values, ECS) in JSON text
_JSON_PAIR = re.compile(
    rf"(?P<a>{_Q}(?:name|Name|key|Key){_Q}\s{{0,64}}:\s{{0,64}}{_Q})(?P<n>[\w.-]{{1,100}})"
    rf"(?P<b>{_Q}\s{{0,64}},\s{{0,64}}{_Q}(?:value|Value){_Q}\s{{0,64}}:\s{{0,64}})"
    rf"(?P<v>{_JSON_STRING}|[^\s,}}\]]{{1,4096}})"
)
# - name: DB_PASSWORD
#   value: x          (YAML, as kubectl get -o yaml prints env vars)
_YAML_PAIR = re.compile(
    r"(?P<a>(?<![\w.-])name:[ \t]{1,64}[\"']?)(?P<n>[\w.-]{1,100})"
    r"(?P<b>[\"']?[ \t]{0,64}\r?\n[ \t]{0,64}value:[ \t]{1,64})(?P<v>[^\r\n]{1,4096})"
)
# name=value, name: value, "name": "value", name => value (the value is read separately)
_NAME_SEP = re.compile(
    r"(?<![\w.-])(?P<n>[\w.-]{1,100})"
    r"(?P<s>(?:\\?[\"'])?[ \t]{0,64}(?:=>|:=|[:=])[ \t]{0,64})"
)
_VALUE = re.compile(
    r"(?P<dq>\\?\"(?:[^\"\\\n]|\\[^\"\n])*)"
    r"|(?P<sq>\\?'[^'\\\n]*)"
    r"|(?P<bare>[^\s\"'\\,;&{}\[\]()<>][^\s\"'\\,;&}\])<>]*)"
)
# --password hunter2, and a container's args as a JSON or YAML list: "--password", "x"
_FLAG = re.compile(
    r"(?<![\w.-])(?P<n>--?[A-Za-z][\w.-]{0,100})(?P<s>[ \t]+"
    r"|" + _Q + r"[ \t]{0,64},\s{0,64}" + _Q + r"|[ \t]{0,64}\r?\n[ \t]{0,64}-[ \t]{1,8})"
    r"(?=[^\s\"'-])"
)
_FLAG_VALUE = re.compile(r"[^\s\"'\\]+")


def _mask_quoted(token: str) -> str:
    """A value as written (quoted, escaped-quoted or bare) with its content masked."""
    for quote in ('\\"', '"', "'"):
        if token.startswith(quote):
            inner = token[len(quote) :]
            closed = inner.endswith(quote) and len(inner) >= len(quote)
            content = inner[: -len(quote)] if closed else inner
            if _harmless(content):
                return token
            return quote + MASK + (quote if closed else "")
    return token if _harmless(token) else f'"{MASK}"'  # a bare JSON scalar stays JSON


def _pair(m: re.Match[str]) -> str:
    if not sensitive_name(m["n"]):
        return m[0]
    return m["a"] + m["n"] + m["b"] + _mask_quoted(m["v"])


def _yaml_pair(m: re.Match[str]) -> str:
    if not sensitive_name(m["n"]) or _harmless(m["v"].strip("\"' ")):
        return m[0]
    return m["a"] + m["n"] + m["b"] + MASK


def _scan(
    text: str,
    names: re.Pattern[str],
    values: re.Pattern[str],
    mask: Callable[[re.Match[str], re.Match[str]], str | None],
) -> str:
    """Masks the value after each sensitive `name<sep>`. Only name and separator are
    consumed, so a pair inside another pair's value is still seen ("env": "TOKEN=x"); a
    masked value is skipped as a whole, which keeps this linear."""
    out: list[str] = []
    pos = 0
    for m in names.finditer(text):
        if m.start() < pos or not sensitive_name(m["n"]):
            continue
        v = values.match(text, m.end())
        if v is None:
            continue
        masked = mask(m, v)
        if masked is None:
            continue
        out += [text[pos : v.start()], masked]
        pos = v.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _mask_pair_value(m: re.Match[str], v: re.Match[str]) -> str | None:
    if m["n"].lower().endswith("authorization"):
        return None  # masked above by shape, keeping the scheme (Bearer, Basic) as evidence
    if v["bare"] is not None:
        if _harmless(v["bare"]):
            return None
        quote = m["s"].lstrip()[:2]
        # After a JSON key the bare value is a number: mask it as a string, JSON stays JSON.
        if quote.startswith('"'):
            return f'"{MASK}"'
        if quote == '\\"':
            return f'\\"{MASK}\\"'
        return MASK
    masked = _mask_quoted(v[0])
    return None if masked == v[0] else masked


def _mask_flag_value(m: re.Match[str], v: re.Match[str]) -> str | None:
    return None if _harmless(v[0]) or "=" in m["n"] else MASK


_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}?PRIVATE KEY(?: BLOCK)?-----")
_LINE_BREAK = re.compile(r"(\r?\n|\\n)")  # real or JSON-escaped
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/=]*")


def _mask_headless_pem(text: str) -> str:
    """A private key whose BEGIN line was cut off (a log read from its tail): masks the
    base64 lines right before its END line. Never looks back past the previous END."""
    out: list[str] = []
    pos = 0
    for m in _PEM_END.finditer(text):
        parts = _LINE_BREAK.split(text[pos : m.start()])  # line, break, line, ..., line
        keep = len(parts)  # parts[:keep] stay
        while keep > 0 and _BASE64_LINE.fullmatch(parts[keep - 1]):
            keep -= 2  # the line and the break before it
        body = "".join(parts[keep + 1 :] if keep > 0 else parts)  # keep the line's break
        if text.endswith(MASK, pos, m.start()) or not body.strip():
            out.append(text[pos : m.end()])  # a whole block, masked by the BEGIN pattern
        else:
            out += [text[pos : m.start() - len(body)], MASK, m[0]]
        pos = m.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """Masks credentials in free text (logs, messages, raw tool output)."""
    lower = text.lower()  # masking only removes text: needles absent now stay absent
    for needles, pattern, replacement in _SHAPES:
        if any(n in lower for n in needles):
            text = pattern.sub(replacement, text)
    if "private key" in lower:
        text = _mask_headless_pem(text)
    if "value" in lower:
        text = _JSON_PAIR.sub(_pair, text)
        text = _YAML_PAIR.sub(_yaml_pair, text)
    if ":" in text or "=" in text:
        text = _scan(text, _NAME_SEP, _VALUE, _mask_pair_value)
    if "-" in text:
        text = _scan(text, _FLAG, _FLAG_VALUE, _mask_flag_value)
    return text


# ---- structured values ----

_NAME_FIELDS = ("name", "Name", "key", "Key")
_VALUE_FIELDS = ("value", "Value")
_JSON_IN_STRING_LIMIT = 1 << 20


def _sensitive_scalar(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, str):
        return not _harmless(value)
    return isinstance(value, int | float)


def _pair_name(value: dict[Any, Any]) -> str | None:
    """The name of a {"name": N, "value": V} pair (an env var, a Helm or ECS setting)."""
    for field in _NAME_FIELDS:
        name = value.get(field)
        if isinstance(name, str) and any(f in value for f in _VALUE_FIELDS):
            return name
    return None


def _redact_string(text: str) -> str:
    """A string that holds a JSON document (an annotation, a ConfigMap value) is masked by
    structure, then by text; other strings by text."""
    head = text.lstrip()[:1]
    if head in ("{", "[") and len(text) <= _JSON_IN_STRING_LIMIT:
        try:
            parsed = json.loads(text)
        except ValueError:
            pass
        else:
            masked = redact_value(parsed)
            if masked != parsed:
                return json.dumps(masked, ensure_ascii=False, separators=(",", ":"))
    return redact(text)


def redact_value(value: Any, *, key: str | None = None) -> Any:
    """Masks credentials in a JSON-able value: strings by text, and any scalar under a
    sensitive key, as the value of a sensitive name/value pair, after a sensitive flag in
    a list, or in a Secret's data. Keys and structure are kept."""
    if key is not None and _sensitive_scalar(value) and sensitive_name(key):
        return MASK
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, list):
        out: list[Any] = []
        flag = False  # the previous item was a sensitive flag: this item is its value
        for item in value:
            if flag and isinstance(item, str) and not item.startswith("-"):
                out.append(item if _harmless(item) else MASK)
            else:
                out.append(redact_value(item))
            flag = (
                isinstance(item, str)
                and item.startswith("-")
                and "=" not in item
                and sensitive_name(item)
            )
        return out
    if isinstance(value, dict):
        name = _pair_name(value)
        pair = name is not None and sensitive_name(name)
        secret = value.get("kind") == "Secret"
        masked: dict[Any, Any] = {}
        for k, v in value.items():
            if pair and k in _VALUE_FIELDS and _sensitive_scalar(v):
                masked[k] = MASK
            elif secret and k in ("data", "stringData") and isinstance(v, dict):
                masked[k] = {dk: MASK if _sensitive_scalar(dv) else dv for dk, dv in v.items()}
            else:
                masked[k] = redact_value(v, key=k if isinstance(k, str) else None)
        return masked
    return value
