"""Lines that carry a credential, one per kind redaction must catch, with realistic fake values.

`CORPUS` is (kind, line, secret): `secret` must never survive redaction, anywhere the line
goes. `EVIDENCE` is ordinary text that must survive unchanged. Unit tests feed each line to
redact(); the integration test cats them all from a real tool Job and searches everything
the run produced.
"""

from __future__ import annotations

_PEM_BODY = (
    "MIIEpAIBAAKCAQEA7dQcorpusRsaKeyBodyLineOne0123456789abcdefABCDEF\n"
    "Zm9vYmFyY29ycHVzUnNhS2V5Qm9keUxpbmVUd28wMTIzNDU2Nzg5YWJjZGVmQUJD"
)
_OPENSSH_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
_EC_BODY = "MHcCAQEEIECcorpusEcKeyBodyOnlyInTheCorpus0123456789oAoGCCqGSM49AwEHoUQDQgAE"

CORPUS: list[tuple[str, str, str]] = [
    # by meaning: values under sensitive names
    ("env assignment", "DB_PASSWORD=hunter2corpus", "hunter2corpus"),
    ("export", "export GITHUB_TOKEN=plainTokenValue77", "plainTokenValue77"),
    ("json key", '{"DB_PASSWORD": "jsonPassw0rdValue"}', "jsonPassw0rdValue"),
    ("json camelCase", '{"user": "app", "apiKey": "camelApiKeyValue9"}', "camelApiKeyValue9"),
    ("json number", '{"pin_password": 90817263}', "90817263"),
    ("yaml", "  password: yamlPassw0rdValue", "yamlPassw0rdValue"),
    ("yaml access-key", "access-key: accessKeyDashValue5", "accessKeyDashValue5"),
    ("yaml private_key", "private_key: 'quotedPrivKeyValue3'", "quotedPrivKeyValue3"),
    ("bare KEY", "KEY=bareKeyEnvValue42", "bareKeyEnvValue42"),
    ("credential", "smtp.credentials = credentialsValue31", "credentialsValue31"),
    ("auth", 'auth: "dXNlcjpjb3JwdXNBdXRoVmFsdWU="', "dXNlcjpjb3JwdXNBdXRoVmFsdWU="),
    (
        "env pair json",
        '"env": [{"name": "DB_PASSWORD", "value": "pairJsonValue11"}]',
        "pairJsonValue11",
    ),
    (
        "env pair yaml",
        "    - name: REDIS_PASSWORD\n      value: pairYamlValue22",
        "pairYamlValue22",
    ),
    ("describe", "      SESSION_SECRET:         describeSecretValue8", "describeSecretValue8"),
    ("flag", "exec mysqld --password flagPasswordValue4 --user app", "flagPasswordValue4"),
    ("flag equals", "app --db-token=flagTokenValue6 --port 80", "flagTokenValue6"),
    ("query string", "GET /callback?code=1&access_token=queryTokenValue2&x=y", "queryTokenValue2"),
    # by shape: a scanner's patterns
    ("aws access key id", "using key AKIAQ3CORPUSEXAMPLE7 for s3", "Q3CORPUSEXAMPLE7"),
    (
        "aws secret key",
        "aws_secret_access_key = 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",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCORPUSKEY1",
    ),
    (
        "aws secret key table",
        "secret_key     wJalrXUtnFEMI/K7MDENG/bPxRfiCYCORPUSKEY2 shared-credentials-file",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCORPUSKEY2",
    ),
    (
        "google api key",
        "maps client key AIzaSyCorpusGoogleKey0123456789abcdefgh loaded",
        "SyCorpusGoogleKey0123456789abcdefgh",
    ),
    (
        "github classic",
        "cloned with ghp_CorpusGithubToken0123456789abcdefABCD",
        "CorpusGithubToken0123456789abcdefABCD",
    ),
    (
        "github oauth",
        "gho_CorpusGithubOauth0123456789abcdefABCD in use",
        "CorpusGithubOauth0123456789abcdefABCD",
    ),
    (
        "github fine-grained",
        "token github_pat_11CORPUS0abcdefghij_CorpusFineGrainedPat0123456789abcdef",
        "11CORPUS0abcdefghij_CorpusFineGrainedPat0123456789abcdef",
    ),
    ("gitlab", "remote uses glpat-CorpusGitlab0123456789x", "CorpusGitlab0123456789x"),
    (
        "slack bot token",
        "bot xoxb-1234567890-CorpusSlackBotToken0123",
        "1234567890-CorpusSlackBotToken0123",
    ),
    (
        "slack webhook",
        "posting to https://hooks.slack.com/services/T0CORPUS1/B0CORPUS2/CorpusWebhookSecret3",
        "CorpusWebhookSecret3",
    ),
    (
        "url with credentials",
        "connecting to postgres://app:urlPassw0rdValue@db.prod:5432/orders",
        "urlPassw0rdValue",
    ),
    ("redis url", "REDIS_URL=redis://:redisUrlSecret9@cache:6379/0", "redisUrlSecret9"),
    ("authorization token", "Authorization: token headerTokenValue0123", "headerTokenValue0123"),
    (
        "authorization bearer",
        'curl -H "Authorization: Bearer bearerHeaderValue4567"',
        "bearerHeaderValue4567",
    ),
    (
        "authorization basic",
        "authorization: Basic Y29ycHVzOmJhc2ljVmFsdWU=",
        "Y29ycHVzOmJhc2ljVmFsdWU=",
    ),
    (
        "azure storage",
        "DefaultEndpointsProtocol=https;AccountName=corpusacct;"
        "AccountKey=CorpusAzureAccountKey0123456789abcdefABCDEF+/ghijklmnopqrstuvwxyz0123==;"
        "EndpointSuffix=core.windows.net",
        "CorpusAzureAccountKey0123456789abcdefABCDEF+/ghijklmnopqrstuvwxyz0123==",
    ),
    (
        "azure sas",
        "https://corpusacct.blob.core.windows.net/c/b?sv=2022-11-02&sig=CorpusSasSig0123%3D",
        "CorpusSasSig0123",
    ),
    (
        "pem rsa",
        f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----",
        "corpusRsaKeyBodyLineOne",
    ),
    (
        "pem openssh",
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_OPENSSH_BODY}\n-----END OPENSSH PRIVATE KEY-----",
        _OPENSSH_BODY,
    ),
    (
        "pem ec",
        f"-----BEGIN EC PRIVATE KEY-----\n{_EC_BODY}\n-----END EC PRIVATE KEY-----",
        "CorpusEcKeyBodyOnlyInTheCorpus",
    ),
    (
        "jwt",
        "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjb3JwdXMifQ"
        ".CorpusJwtSignature0123456789abc",
        "eyJzdWIiOiJjb3JwdXMifQ",
    ),
    (
        "openai",
        "OPENAI client sk-proj-CorpusOpenAiKey0123456789abcdefABCDEF",
        "CorpusOpenAiKey0123456789abcdefABCDEF",
    ),
    ("stripe", "charging with sk_live_CorpusStripeKey0123456789", "CorpusStripeKey0123456789"),
]

# Ordinary evidence that must stay readable, unchanged.
EVIDENCE: list[str] = [
    "the tokenizer failed on line 3",
    "keyboard=us monkey=george author=alice",
    "tokenizer=bert keyboard: us",
    "kind: Secret",
    "secretName: web-tls",
    "secretKeyRef: {name: db, key: password}",
    '"secretKeyRef": {"name": "db", "key": "password"}',
    "key: app",
    "prompt_tokens=123 total_tokens=456",
    "auth_enabled=true",
    "GET /healthz 200 12ms user=alice",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUCorpusCert\n-----END CERTIFICATE-----",
    "Basic authentication is required",
    "tests passed=10 failed=0",
    "PWD=/app",
    "https://example.com/docs?page=2",
    "a key ends with -----END PRIVATE KEY----- in PEM",
]
