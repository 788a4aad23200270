"""The local Prometheus (Debian package) scrapes a running operator's /metrics, and PromQL for
runs awaiting approval returns the number of runs that wait (issue 8, "what it must show").

Prometheus runs as a local process on loopback (tests/support/alerting.py), scraping the
operator every second; the query goes through its HTTP API, as a dashboard or alert would.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.integration.spine import Spine, done
from tests.support import alerting
from tests.support.stack import OperatorProcess

Starter = Callable[..., OperatorProcess]
AWAITING = "sum(agentrun_runs_awaiting_approval)"


class ScrapingPrometheus(alerting.Prometheus):
    """Prometheus with one scrape job, every second, and nothing else."""

    def scrape(self, targets: list[str]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "agentrun", "static_configs": [{"targets": targets}]}],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self._start(
            [
                alerting.PROMETHEUS,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Show a series' latest scrape at once (the default looks back 5 minutes, and
                # a series that vanished keeps its last value until it is marked stale).
                "--query.lookback-delta=5s",
            ]
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


def test_prometheus_counts_the_runs_awaiting_approval(
    own_operator: tuple[Spine, Starter], tmp_path: Path
) -> None:
    alerting.ensure_installed()
    spine, start = own_operator
    ns = spine.namespace
    spine.setup([spine.write(), done("web restarted.")])
    op = start()
    prom = ScrapingPrometheus(tmp_path / "prometheus")
    target = f"127.0.0.1:{op.metrics_port}"
    prom.scrape([target])

    def value_is(want: float) -> Callable[[], bool]:
        return lambda: prom.scalar(AWAITING) == want

    try:
        # The operator is a healthy scrape target before any run exists.
        spine.wait(lambda: prom.scalar(f'up{{instance="{target}"}}') == 1, "the scrape", 30)
        (active,) = prom.api("targets")["activeTargets"]
        assert active["health"] == "up" and active["scrapeUrl"] == f"http://{target}/metrics"

        for run in ("first", "second"):
            spine.start(run)
        pending = {
            run: spine.wait_phase("AwaitingApproval", name=run)["pendingAction"]
            for run in ("first", "second")
        }
        spine.wait(value_is(2), f"{AWAITING} == 2", 30)
        by_agent = prom.query("sum by (agent) (agentrun_runs_awaiting_approval)")
        assert [(r["metric"]["agent"], r["value"][1]) for r in by_agent] == [("agent", "2")]
        assert prom.scalar('sum(agentrun_runs{phase="AwaitingApproval"})') == 2
        waited = prom.scalar("max(agentrun_approval_wait_seconds_max)")
        assert waited is not None and waited >= 0

        spine.annotate("agentrun.dev/approve", pending["first"]["actionHash"], name="first")
        spine.wait_phase("Succeeded", "Failed", name="first")
        spine.wait(value_is(1), f"{AWAITING} == 1 after one approval", 30)
        assert spine.status("second")["phase"] == "AwaitingApproval"
        assert prom.scalar('sum(agentrun_runs{phase="AwaitingApproval"})') == 1
        # The step counter was scraped too: two runs' first steps and the approved run's last.
        spine.wait(
            lambda: prom.scalar("sum(agentrun_steps_total)") == 3, "agentrun_steps_total == 3", 30
        )
    except (AssertionError, TimeoutError):
        print(f"namespace {ns}\noperator log:\n{op.log_tail(60)}\nprometheus log:\n")
        print(prom.log_tail(30))
        raise
    finally:
        prom.stop()
