"""prometheus-query: an instant or range PromQL query, summarised per series.

The Prometheus URL comes only from AGENTRUN_PROMETHEUS_URL, a setting of the AgentTool (owned
by a tool-admin): the model picks the query, never where it goes, so a prompt injection in a
log or an alert cannot turn this read tool into a way to send data out. The result is never
the raw sample dump: per series its labels and min/max/last (and the sample count of a
range), the series ordered by last value, highest first, cut at maxSeries with a note.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from .common import ToolError, arguments, clip, int_arg

ARGUMENTS = frozenset({"query", "range", "step", "time", "maxSeries"})
TYPES: dict[str, type | tuple[type, ...]] = {
    "query": str,
    "range": str,
    "step": str,
    "time": str,
    "maxSeries": int,
}
URL_ENV = "AGENTRUN_PROMETHEUS_URL"
DEFAULT_SERIES, MAX_SERIES = 10, 50
MAX_POINTS = 11_000  # Prometheus refuses more than 11000 points per series
TIMEOUT = 20
VALUE_KEYS = ("last", "min", "max", "avg")
DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"query"})  # an unknown argument (e.g. a `url`) is refused
    base = configured_url()
    max_series = int_arg(args, "maxSeries", DEFAULT_SERIES, 1, MAX_SERIES)
    query = str(args["query"])
    end = parse_time(args.get("time"))
    params: dict[str, str] = {"query": query}
    if args.get("range"):
        window = parse_duration(str(args["range"]), "range")
        step = (
            parse_duration(str(args["step"]), "step") if args.get("step") else default_step(window)
        )
        if window / step > MAX_POINTS:
            raise ToolError(f"range/step gives over {MAX_POINTS} points; use a larger step")
        params |= {"start": f"{end - window:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        endpoint = "query_range"
    else:
        params["time"] = f"{end:.3f}"
        endpoint = "query"
    body = fetch(f"{base}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}", base)
    out = summarise(body, max_series)
    out = {
        "query": query,
        **({"range": args["range"], "step": params["step"]} if "step" in params else {}),
        **out,
    }
    return out


def configured_url() -> str:
    base = os.environ.get(URL_ENV, "").strip().rstrip("/")
    if not base:
        raise ToolError(
            f"no Prometheus URL configured: a tool-admin sets {URL_ENV} in the AgentTool's env"
        )
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"{URL_ENV} must be http(s)://host:port of Prometheus, got {base!r}")
    return base


def parse_duration(text: str, what: str) -> float:
    m = DURATION.match(text.strip())
    if not m:
        raise ToolError(f"{what} must be a duration such as 30s, 15m, 1h or 2d, got {text!r}")
    seconds = int(m.group(1)) * UNITS[m.group(2)]
    if seconds <= 0:
        raise ToolError(f"{what} must be positive")
    return float(seconds)


def default_step(window: float) -> float:
    """About 60 points over the window, at least 1 s, a round number of seconds."""
    return float(max(1, math.ceil(window / 60)))


def parse_time(value: Any) -> float:
    """Unix seconds or RFC 3339; default now."""
    if not value:
        return time.time()
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ToolError(f"time must be unix seconds or RFC 3339, got {text!r}") from exc


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the request goes to the configured Prometheus and nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, base: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _OPENER.open(req, timeout=TIMEOUT) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise ToolError(
                f"Prometheus at {base} answered a redirect (HTTP {exc.code}), which is not "
                f"followed: set the final URL in {URL_ENV}"
            ) from exc
        raw = exc.read()
        try:
            err = json.loads(raw)
        except ValueError:
            text = clip(raw.decode(errors="replace"), 300)
            raise ToolError(f"Prometheus at {base} answered HTTP {exc.code}: {text}") from exc
        raise ToolError(
            f"Prometheus refused the query ({err.get('errorType')}): {err.get('error')}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolError(f"cannot reach Prometheus at {base}: {reason}") from exc
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ToolError(f"{base} did not answer with Prometheus JSON") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ToolError(f"Prometheus query failed: {clip(json.dumps(body), 300)}")
    return body


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: float) -> float | str:
    """Numbers as JSON numbers, NaN/Inf as strings, compact."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return float(f"{value:.6g}") if value != int(value) else int(value)


def _labels(metric: dict[str, Any]) -> dict[str, Any]:
    return {k: clip(str(v), 200) for k, v in sorted(metric.items())}


def summarise(body: dict[str, Any], max_series: int) -> dict[str, Any]:
    data = body.get("data") or {}
    result_type = data.get("resultType")
    result = data.get("result")
    out: dict[str, Any] = {"resultType": result_type}
    if result_type in ("scalar", "string"):
        ts, value = result if isinstance(result, list) and len(result) == 2 else (None, None)
        out["value"] = fmt(_num(value)) if result_type == "scalar" else value
        out["at"] = ts
    else:
        rows = []
        for series in result or []:
            metric = _labels(series.get("metric") or {})
            if result_type == "vector":
                ts, value = series.get("value") or [None, None]
                rows.append({"labels": metric, "last": _num(value), "at": ts})
            else:
                values = [_num(v) for _, v in series.get("values") or []]
                stamps = [t for t, _ in series.get("values") or []]
                finite = [v for v in values if not math.isnan(v)]
                rows.append(
                    {
                        "labels": metric,
                        "last": values[-1] if values else math.nan,
                        "min": min(finite) if finite else math.nan,
                        "max": max(finite) if finite else math.nan,
                        "avg": sum(finite) / len(finite) if finite else math.nan,
                        "samples": len(values),
                        "from": stamps[0] if stamps else None,
                        "to": stamps[-1] if stamps else None,
                    }
                )
        rows.sort(key=lambda r: -r["last"] if not math.isnan(r["last"]) else math.inf)
        out["seriesCount"] = len(rows)
        shown = rows[:max_series]
        out["series"] = [
            {k: fmt(v) if k in VALUE_KEYS else v for k, v in r.items() if v is not None}
            for r in shown
        ]
        if len(rows) > max_series:
            out["note"] = (
                f"showing {max_series} of {len(rows)} series (highest last value first); "
                "aggregate the query (sum by, topk) or raise maxSeries"
            )
        if not rows:
            out["note"] = "no series matched (empty result)"
    if body.get("warnings"):
        out["warnings"] = [clip(str(w), 300) for w in body["warnings"]][:5]
    return out
