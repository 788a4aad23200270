"""The agentrun.dev/v1alpha1 API: the single source of the CRD schemas (see crdgen)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP = "agentrun.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "agentrun.dev/v1alpha1"

ANNOTATION_APPROVE = f"{GROUP}/approve"
ANNOTATION_REJECT = f"{GROUP}/reject"
ANNOTATION_ANSWER = f"{GROUP}/answer"
# Stamped by the admission webhook with the user who approved or rejected; read by the core.
ANNOTATION_DECIDED_BY = f"{GROUP}/decided-by"
# Set by the receiver (Slack) with a decision: the Kubernetes user it decides for. Honoured
# only from the ServiceAccounts the operator trusts (--approval-proxy); the mutating webhook
# turns it into decided-by and removes it, so it is never stored.
ANNOTATION_DECIDED_FOR = f"{GROUP}/decided-for"
# Set by the operator on a run whose Slack card is open: "<channel>/<ts>/<action hash>" (no
# hash for a question), for chat.update when the run moves on.
ANNOTATION_SLACK_CARD = f"{GROUP}/slack-card"
LABEL_RUN = f"{GROUP}/run"
LABEL_STEP = f"{GROUP}/step"
LABEL_TOOL = f"{GROUP}/tool"
LABEL_FORK_OF = f"{GROUP}/fork-of"  # on a fork created by the CLI: its source's name
LABEL_MCP_SERVER = f"{GROUP}/mcp-server"  # on an MCPServer's tools/list Jobs

# A fork copies at most as many events as a thread holds (engine.core.MAX_THREAD_EVENTS).
FORK_MAX_EVENTS = 200

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TOOL_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"


class Model(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    AWAITING_APPROVAL = "AwaitingApproval"
    AWAITING_INPUT = "AwaitingInput"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class Effect(StrEnum):
    READ = "read"
    WRITE = "write"


# ---------------------------------------------------------------- Agent


class SecretKeyRef(Model):
    name: str = Field(pattern=NAME_PATTERN, max_length=253, description="Secret name.")
    key: str = Field(min_length=1, max_length=253, description="Key in the Secret.")


class ModelSpec(Model):
    name: str = Field(min_length=1, max_length=200, description="Model name sent to the API.")
    baseURL: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OpenAI-compatible endpoint; the OpenAI API when unset.",
    )
    apiKeySecretRef: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret holding the API key, in the operator's credentials namespace (not the "
            'run\'s) and labelled agentrun.dev/credentials: "true"; any other Secret is '
            "not read. Never copied into status or logs."
        ),
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    timeoutSeconds: int = Field(default=60, ge=1, le=3600, description="Per-request timeout.")
    maxRetries: int = Field(default=3, ge=0, le=10, description="Retries for 429/5xx/timeouts.")
    maxTokens: int = Field(
        default=4096, ge=1, le=200_000, description="max_tokens of one reply (sent to the API)."
    )


class PromptSelector(Model):
    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Prompt name in prompts/.")
    version: str | None = Field(
        default=None, max_length=32, description="Pinned version; the newest when unset."
    )


class Limits(Model):
    maxSteps: int | None = Field(default=None, ge=1, le=1000, description="Model calls per run.")
    maxConsecutiveErrors: int | None = Field(default=None, ge=1, le=100)
    timeoutSeconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    maxTotalTokens: int | None = Field(default=None, ge=1)
    approvalTimeoutSeconds: int | None = Field(
        default=None,
        ge=1,
        le=30 * 24 * 3600,
        description="How long a proposed write waits for a decision; then ApprovalExpired.",
    )


DEFAULT_MAX_STEPS = 20
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 24 * 3600
DEFAULT_MAX_CONSECUTIVE_ERRORS = 3
DEFAULT_TIMEOUT_SECONDS = 3600


class PrefetchCall(Model):
    tool: str = Field(pattern=TOOL_NAME_PATTERN, max_length=63, description="A read tool.")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Arguments; string values may use {{ input.context.alert.labels.namespace }}-style "
            "placeholders filled from the run's input (or {{ run.namespace }}), with a fallback "
            "for a value the input may lack: {{ input.context.alert.labels.namespace | "
            'default(run.namespace) }} or | default("").'
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class NotifyEvent(StrEnum):
    AWAITING_APPROVAL = "AwaitingApproval"
    AWAITING_INPUT = "AwaitingInput"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class SlackAppNotify(Model):
    """Interactive Slack cards through a Slack app (Web API), instead of an incoming webhook."""

    channel: str = Field(
        pattern=r"^[A-Z0-9]{2,30}$", description="Channel id (C...) the app posts cards to."
    )
    tokenSecretRef: SecretKeyRef = Field(
        description="Secret holding the app's bot token (xoxb-...), in the operator's "
        'credentials namespace and labelled agentrun.dev/credentials: "true".'
    )
    apiURL: str = Field(
        default="https://slack.com/api",
        pattern=r"^https?://",
        description="Slack's Web API; must be under the operator's allowed notification URLs.",
    )


class NotifySpec(Model):
    webhookURL: str | None = Field(default=None, pattern=r"^https?://")
    webhookSecretRef: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret holding the webhook URL (e.g. a Slack webhook), in the operator's "
            'credentials namespace and labelled agentrun.dev/credentials: "true". The URL, '
            "like webhookURL, must be under the operator's allowed notification URLs."
        ),
    )
    format: Literal["generic", "slack"] = "generic"
    slackApp: SlackAppNotify | None = Field(
        default=None,
        description="Post interactive cards (Approve/Reject, an answer field) with a Slack "
        "app and update them in place when the run moves on; replaces the webhook.",
    )
    on: list[NotifyEvent] = Field(
        default_factory=lambda: [
            NotifyEvent.AWAITING_APPROVAL,
            NotifyEvent.AWAITING_INPUT,
            NotifyEvent.SUCCEEDED,
            NotifyEvent.FAILED,
        ]
    )


class AgentSpec(Model):
    model: ModelSpec
    prompt: PromptSelector = Field(default_factory=lambda: PromptSelector(name="sre-agent"))
    tools: list[str] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Names of AgentTools in the run's namespace this agent may call, and MCP tools as "
            '"mcp:SERVER/TOOL" (an MCPServer of the namespace; the model sees mcp__SERVER__TOOL).'
        ),
    )
    prefetch: list[PrefetchCall] = Field(
        default_factory=list,
        max_length=16,
        description="Read tool calls run before the first model call (their tools must be listed).",
    )
    contextBudgetTokens: int = Field(
        default=16000, ge=1000, le=2_000_000, description="Token budget of one model request."
    )
    limits: Limits = Field(default_factory=Limits, description="Defaults for runs of this agent.")
    notify: NotifySpec | None = Field(
        default=None, description="Where to send a summary when a run needs a human or ends."
    )


class Agent(Model):
    apiVersion: Literal["agentrun.dev/v1alpha1"] = API_VERSION
    kind: Literal["Agent"] = "Agent"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AgentSpec


# ---------------------------------------------------------------- AgentTool


class ResourceList(Model):
    cpu: str | None = None
    memory: str | None = None


class Resources(Model):
    requests: ResourceList = Field(default_factory=lambda: ResourceList(cpu="50m", memory="64Mi"))
    limits: ResourceList = Field(default_factory=lambda: ResourceList(cpu="500m", memory="256Mi"))


class EnvVar(Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: str = Field(max_length=4096, description="Literal value; never a credential.")


class AgentToolSpec(Model):
    description: str = Field(min_length=1, max_length=4000, description="Shown to the model.")
    effect: Effect = Field(description="read runs at once; write waits for a human approval.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema (type object) of the tool's arguments.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    builtin: str | None = Field(
        default=None,
        pattern=TOOL_NAME_PATTERN,
        description="Built-in tool of the tool runner; defaults to the AgentTool's name.",
    )
    image: str | None = Field(default=None, description="Defaults to the operator's tool image.")
    command: list[str] | None = Field(
        default=None, description="Entrypoint; defaults to the tool runner (agentrun-tool)."
    )
    serviceAccountName: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Defaults to agentrun-tool-read or agentrun-tool-write by effect.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=32,
        description="Settings for the tool's Job, e.g. AGENTRUN_PROMETHEUS_URL.",
    )
    timeoutSeconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="How long a call may run once its pod started on a node (the pod's "
        "activeDeadlineSeconds); the wait for a node is bounded by the operator's "
        "tools.startSeconds.",
    )
    outputLimitBytes: int = Field(default=262144, ge=1024, le=900 * 1024)
    resources: Resources = Field(default_factory=Resources)


class AgentTool(Model):
    apiVersion: Literal["agentrun.dev/v1alpha1"] = API_VERSION
    kind: Literal["AgentTool"] = "AgentTool"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AgentToolSpec


class ToolSnapshot(Model):
    """Everything a tool call runs, resolved (defaults and admin policy applied) and frozen
    when the call is proposed. The Job is built from it, never from the live AgentTool, and
    the action hash covers it: approving means approving exactly this."""

    builtin: str | None = None
    effect: Effect
    image: str
    command: list[str]
    serviceAccountName: str
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    timeoutSeconds: int
    outputLimitBytes: int
    envFromSecret: str | None = Field(
        default=None,
        description="A Secret whose keys the Job gets as AGENTRUN_MCP_HEADER_<key> (MCP headers).",
    )
    specDigest: str = Field(description="sha256 of the fields above, canonical JSON.")


# ---------------------------------------------------------------- MCPServer


class MCPStdio(Model):
    image: str | None = Field(
        default=None,
        description=(
            "Image holding the server and agentrun-tool with the mcp extra (build it FROM the "
            "agentrun image); defaults to the operator's tool image. Must be an allowed tool image."
        ),
    )
    command: list[str] = Field(
        min_length=1, max_length=64, description="The server's command, started in the tool pod."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=32, description="Settings for the server process."
    )


class MCPStreamableHttp(Model):
    url: str = Field(
        pattern=r"^https?://",
        max_length=2048,
        description="The server's endpoint; must be under the operator's allowed MCP URLs.",
    )
    headersSecretRef: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=253,
        description=(
            "A Secret in this namespace whose keys are header names and values header values "
            "(e.g. Authorization); the kubelet gives them to the tool pod, never the operator."
        ),
    )


class MCPServerSpec(Model):
    stdio: MCPStdio | None = Field(
        default=None, description="A server the tool Job starts in its own pod, for one call."
    )
    streamableHttp: MCPStreamableHttp | None = Field(
        default=None, description="A server reached over Streamable HTTP, from the tool Job."
    )
    readTools: list[str] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Tools an admin marks read: they run at once. Every other tool is a write and waits "
            "for approval; the server's readOnlyHint is shown, never trusted alone."
        ),
    )
    serviceAccountName: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Defaults to agentrun-tool-read for reads and the listing, -write for writes.",
    )
    timeoutSeconds: int = Field(default=60, ge=5, le=3600, description="Per call (and list).")
    outputLimitBytes: int = Field(default=262144, ge=1024, le=900 * 1024)
    resources: Resources = Field(default_factory=Resources)
    refreshSeconds: int = Field(
        default=300, ge=30, le=7 * 24 * 3600, description="Re-list the tools this often."
    )


class MCPToolInfo(Model):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str
    title: str | None = None
    description: str = ""
    inputSchema: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    outputSchema: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    annotations: dict[str, Any] | None = Field(
        default=None,
        description="The server's hints (readOnlyHint, destructiveHint): shown, not trusted.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class MCPServerStatus(Model):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = None
    tools: list[MCPToolInfo] = Field(default_factory=list)
    digest: str | None = Field(default=None, description="sha256 of the tools/list result.")
    lastListTime: str | None = None
    listKey: str | None = Field(default=None, description="The spec and period last listed.")


class MCPServer(Model):
    apiVersion: Literal["agentrun.dev/v1alpha1"] = API_VERSION
    kind: Literal["MCPServer"] = "MCPServer"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MCPServerSpec
    status: MCPServerStatus = Field(default_factory=MCPServerStatus)


# ---------------------------------------------------------------- AgentRun


class RunInput(Model):
    task: str = Field(min_length=1, max_length=32768, description="What the agent should do.")
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form structured context, such as the alert.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    lastTransitionTime: str
    observedGeneration: int | None = None


class EventType(StrEnum):
    TOOL_CALL = "ToolCall"
    TOOL_RESULT = "ToolResult"
    ERROR = "Error"
    APPROVAL = "Approval"
    REJECTION = "Rejection"
    QUESTION = "Question"
    ANSWER = "Answer"
    DONE = "Done"


class ThreadEvent(Model):
    step: int
    type: EventType
    time: str
    tool: str | None = None
    arguments: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    content: str = Field(default="", description="Compacted text the model sees.")
    jobRef: str | None = None
    jobUID: str | None = Field(default=None, description="uid of the Job the result came from.")
    specDigest: str | None = Field(default=None, description="Digest of the tool spec that ran.")
    outputRef: str | None = Field(default=None, description="ConfigMap with the raw output.")
    container: str | None = Field(
        default=None,
        description="The call's container in its Job, when the Job runs several calls.",
    )
    inheritedFrom: str | None = Field(
        default=None,
        description="For an event a fork inherited: the run it happened in (not this one).",
    )


class ActionState(StrEnum):
    AWAITING_APPROVAL = "AwaitingApproval"
    READY = "Ready"  # may run: a read, or an approved write
    JOB_CREATED = "JobCreated"


class CurrentAction(Model):
    step: int
    tool: str
    effect: Effect
    arguments: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    actionHash: str
    requestedTime: str
    state: ActionState
    jobRef: str
    prefetch: bool = Field(default=False, description="Run before the first model call.")
    preconditions: dict[str, Any] = Field(
        default_factory=dict,
        description="Target state the write was proposed on (pod uid, revision, replicas).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    snapshot: ToolSnapshot | None = Field(default=None, description="What will run, frozen.")


class BatchCall(CurrentAction):
    """One read call of a batch: prefetch calls, or several read calls in one model reply,
    each its own Job, all running together; calls under the same ServiceAccount, image and
    timeout share one Job, a container each."""

    container: str | None = Field(
        default=None,
        description="Its container in the Job it shares with other calls of the batch "
        "(jobRef); none for a Job of its own.",
    )

    result: ThreadEvent | None = Field(
        default=None,
        description="Its result (or error) once its Job is done; the batch's results enter "
        "the thread in the order the calls were made when the last one is done.",
    )


class Urgency(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class PendingInput(Model):
    step: int
    question: str
    urgency: Urgency = Urgency.NORMAL
    requestedTime: str
    answerCommand: str


class PendingAction(Model):
    step: int
    tool: str
    arguments: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    actionHash: str
    requestedTime: str
    approveCommand: str
    expiresTime: str | None = Field(default=None, description="Then the run fails ApprovalExpired.")
    preconditions: dict[str, Any] = Field(
        default_factory=dict,
        description="Target state the write was proposed on (pod uid, revision, replicas).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    snapshot: ToolSnapshot | None = Field(default=None, description="What will run, frozen.")


class Decision(StrEnum):
    APPROVED = "Approved"
    REJECTED = "Rejected"
    REFUSED = "Refused"  # an approval that did not match the pending action
    EXPIRED = "Expired"  # no decision within limits.approvalTimeoutSeconds


class ApprovalRecord(Model):
    step: int
    tool: str
    actionHash: str
    decision: Decision
    reason: str = ""
    approver: str = Field(default="", description="Who decided, when known.")
    time: str


class Usage(Model):
    promptTokens: int = 0
    completionTokens: int = 0
    totalTokens: int = 0
    modelCalls: int = 0


class PromptRef(Model):
    name: str
    version: str
    sha256: str


class RunResult(Model):
    answer: str = ""


class ForkOf(Model):
    """The run a fork continues: its events up to `step`, copied when the fork was created
    (`kubectl agentrun fork`), so the fork needs nothing of its source afterwards."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253, description="The source run.")
    uid: str = Field(max_length=64, description="The source run's uid (which run it was).")
    step: int = Field(ge=0, le=1000, description="The last step taken from the source.")
    events: list[ThreadEvent] = Field(
        max_length=FORK_MAX_EVENTS,
        description=(
            "The source's thread up to `step` (bounded like a thread): the fork's thread "
            "starts with them, marked inherited. Context for the model only: no approval, "
            "Job or hash of the fork derives from them."
        ),
    )
    omitted: int = Field(
        default=0, ge=0, description="Events of the source's steps up to `step` not copied."
    )
    promptRef: PromptRef | None = Field(default=None, description="The source's prompt.")


class AgentRunSpec(Model):
    agentRef: str = Field(pattern=NAME_PATTERN, max_length=253, description="Agent to run.")
    input: RunInput
    limits: Limits = Field(default_factory=Limits, description="Overrides the Agent's defaults.")
    cancel: bool = Field(default=False, description="Set true to stop the run.")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description=(
            "Overrides the name of the Agent's model; its endpoint and key stay the Agent's."
        ),
    )
    prompt: PromptSelector | None = Field(default=None, description="Overrides the Agent's prompt.")
    forkOf: ForkOf | None = Field(
        default=None, description="This run is a fork: it goes on from a step of another run."
    )


class AgentRunStatus(Model):
    # Status is written by the operator; tolerate fields of other writers instead of failing.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    phase: Phase = Phase.PENDING
    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = None
    step: int = 0
    consecutiveErrors: int = 0
    startTime: str | None = None
    completionTime: str | None = None
    thread: list[ThreadEvent] = Field(default_factory=list)
    currentAction: CurrentAction | None = None
    pendingAction: PendingAction | None = None
    pendingInput: PendingInput | None = None
    batch: list[BatchCall] = Field(
        default_factory=list,
        description="Read calls running together, each in its own Job (prefetch, or several "
        "read calls in one model reply).",
    )
    prefetched: int = Field(default=0, description="Prefetch calls started or skipped.")
    storedOutputBytes: int = Field(
        default=0, description="Raw tool output kept in ConfigMaps so far (bounded per run)."
    )
    threadDropped: int = Field(default=0, description="Oldest thread events dropped for size.")
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    promptRef: PromptRef | None = None
    result: RunResult | None = None
    traceID: str | None = Field(
        default=None,
        description="The run's OpenTelemetry trace id, when the operator exports traces.",
    )


class AgentRun(Model):
    apiVersion: Literal["agentrun.dev/v1alpha1"] = API_VERSION
    kind: Literal["AgentRun"] = "AgentRun"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AgentRunSpec
    status: AgentRunStatus = Field(default_factory=AgentRunStatus)
