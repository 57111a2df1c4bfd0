"""Every `bash` block of docs/deployment.md runs, in order, against a real stack.

Blocks run in a scratch copy of the repository (deploy/ copied, the rest linked) with the stack's
environment. No container engine runs here, so `docker` is a stand-in that validates instead of
running: `docker compose ...` must name existing compose files, services and options and pass the
real Compose v2 `config`; `docker build` must name the Dockerfile and an existing context. `make` runs
as `make -n`, and `voiceapp up/down` only check their options (the stack is already up): the rest
(`voiceapp`, `python -m migrations`, `celery`, `curl`, `promtool`, `sed`, ...) really runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import yaml

from tests.support import REPO

DOCS = REPO / "docs" / "deployment.md"
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL
)

DOCKER_STUB = r'''#!{python}
"""Stand-in for `docker` in the docs test: validates compose and build commands without an engine."""
import subprocess, sys
from pathlib import Path

COMPOSE = {compose!r}
FLAGS = {{"-d", "--detach", "--rm", "--no-build", "--build", "--remove-orphans", "--no-deps", "-T", "--wait"}}
VALUED = {{"--tail", "-t", "--timeout", "--scale", "-e", "--entrypoint", "-u", "--user"}}
SUBCOMMANDS = {{"up", "stop", "start", "restart", "logs", "ps", "run", "pull", "build", "rm", "down", "exec", "config"}}


def fail(message):
    print(f"docker stand-in: {{message}}", file=sys.stderr)
    sys.exit(2)


def compose(args):
    files, profiles = [], []
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("-f", "--file"):
            files.append(args.pop(0))
        elif option == "--profile":
            profiles.append(args.pop(0))
        else:
            fail(f"unknown compose option {{option}}")
    if not files:
        fail("name the compose file with -f (the docs run from the repository root)")
    base = [COMPOSE] + [a for f in files for a in ("-f", f)] + [a for p in profiles for a in ("--profile", p)]
    done = subprocess.run(base + ["config", "--services"], capture_output=True, text=True)
    if done.returncode:
        fail(done.stderr)
    services = set(done.stdout.split())
    if not args or args[0] not in SUBCOMMANDS:
        fail(f"unexpected compose subcommand {{args[:1]}}")
    sub, rest, named = args[0], args[1:], []
    while rest:
        item = rest.pop(0)
        if item in VALUED:
            value = rest.pop(0)
            if item == "--scale":
                named.append(value.split("=", 1)[0])
        elif item.startswith("--scale="):
            named.append(item.split("=", 1)[1].split("=", 1)[0])
        elif item.startswith("-"):
            if item not in FLAGS:
                fail(f"unknown option {{item}} for compose {{sub}}")
        else:
            named.append(item)
            if sub in ("run", "exec"):
                break  # the rest is the command run in the container
    unknown = set(named) - services
    if unknown:
        fail(f"no such service(s) {{sorted(unknown)}}; services: {{sorted(services)}}")
    print(f"validated: docker compose {{' '.join(sys.argv[2:])}}")


def build(args):
    dockerfile, context = "Dockerfile", None
    while args:
        item = args.pop(0)
        if item in ("-f", "--file"):
            dockerfile = args.pop(0)
        elif item in ("-t", "--tag", "--build-arg"):
            args.pop(0)
        elif item.startswith("-"):
            fail(f"unknown build option {{item}}")
        else:
            context = item
    if context is None or not Path(context).is_dir() or not Path(dockerfile).is_file():
        fail(f"docker build needs an existing Dockerfile ({{dockerfile}}) and context ({{context}})")
    print(f"validated: docker build {{' '.join(sys.argv[2:])}}")


argv = sys.argv[1:]
if argv[:1] == ["compose"]:
    compose(argv[1:])
elif argv[:1] == ["build"]:
    build(argv[1:])
else:
    fail(f"not supported in the docs test: docker {{' '.join(argv)}}")
'''

VOICEAPP_STUB = """#!/bin/sh
# `voiceapp up/down` would restart the test stack: only check that the command and its options exist.
case "$1" in
  up|down)
    help="$({real} "$1" --help)" || exit 2
    cmd="$1"; shift
    for option in "$@"; do
      printf '%s' "$help" | grep -q -- "$option" || {{ echo "voiceapp $cmd has no option $option" >&2; exit 2; }}
    done
    echo "validated: voiceapp $cmd $*"
    ;;
  *) exec {real} "$@" ;;
esac
"""


def doc_blocks(language: str) -> list[str]:
    """The bodies of the fenced blocks of one language, dedented to their fence, in document order."""
    text = DOCS.read_text()
    return [textwrap.dedent(m["body"]) for m in FENCE.finditer(text) if m["lang"] == language]


def _stubs(root: Path) -> Path:
    from tests.test_deploy import _compose_binary

    bin_dir = root / "stub-bin"
    bin_dir.mkdir()
    venv_bin = Path(sys.executable).parent
    scripts = {
        "docker": DOCKER_STUB.format(python=sys.executable, compose=_compose_binary()),
        "make": f'#!/bin/sh\nexec {shutil.which("make")} -n "$@"\n',
        "voiceapp": VOICEAPP_STUB.format(real=venv_bin / "voiceapp"),
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _scratch_repo(root: Path) -> Path:
    """The repository as the docs see it: deploy/ copied (the docs edit deploy/voiceapp.env), the rest linked."""
    work = root / "repo"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name in (".git", "deploy") or entry.name.startswith((".venv", ".voiceapp", ".pytest")):
            continue
        (work / entry.name).symlink_to(entry)
    shutil.copytree(REPO / "deploy", work / "deploy")
    return work


def _run(block: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _collections(env: dict) -> list[str]:
    probe = (
        "from voiceapp.config import Settings; from voiceapp.storage.mongo import get_db; "
        "print(sorted(get_db(Settings.from_env()).list_collection_names()))"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # a printed list of names


def test_docs_has_bash_blocks_for_every_operator_task():
    script = "\n".join(doc_blocks("bash"))
    for needed in (
        "python -m migrations",
        "voiceapp migrate",
        "voiceapp status",
        "--scale worker-stt=",
        "compose.gpu.yaml",
        "promtool test rules",
        "voiceapp up --flower",
        "VOICE_ENABLED=false",
        "drop_collection",
        "docker build -f deploy/Dockerfile",
    ):
        assert needed in script, needed


def test_every_bash_block_of_the_deployment_guide_works(ops_stack, tmp_path):
    work = _scratch_repo(tmp_path)
    stub_bin = _stubs(tmp_path)
    flower_port = ops_stack.flower_url.rsplit(":", 1)[1]
    env = ops_stack.env(FLOWER_PORT=flower_port)
    env["PATH"] = f"{stub_bin}{os.pathsep}{env['PATH']}"
    scratch_db = f"docs_rollback_{uuid.uuid4().hex[:8]}"

    for number, block in enumerate(doc_blocks("bash"), 1):
        block_env = env
        if "drop_collection" in block:
            # Destructive: run it on a scratch database the migrations just filled.
            block_env = {**env, "MONGO_DB": scratch_db}
            migrated = subprocess.run(
                [sys.executable, "-m", "migrations"], env=block_env, capture_output=True, text=True, timeout=120
            )
            assert migrated.returncode == 0, migrated.stderr
            assert "voice_sessions" in _collections(block_env)
        done = _run(block, work, block_env)
        assert done.returncode == 0, (
            f"block {number} failed:\n{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        if "drop_collection" in block:
            left = [name for name in _collections(block_env) if name.startswith("voice_")]
            assert left == [], left
            assert "dropped voice_sessions" in done.stdout

    # The guide's edits reached the env file: a signing key, then voice switched off for the rollback.
    settings_env = dict(
        line.split("=", 1)
        for line in (work / "deploy" / "voiceapp.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert len(settings_env["VOICE_SECRET_KEY"]) == 64
    assert settings_env["VOICE_ENABLED"] == "false"


def test_rollback_switch_removes_voice_endpoints_but_keeps_health(tmp_path):
    env_file = tmp_path / "voiceapp.env"
    env_file.write_text((REPO / "deploy" / "env.example").read_text())
    for block in doc_blocks("bash"):
        if "VOICE_ENABLED=false" in block:
            sed = next(line for line in block.splitlines() if line.startswith("sed "))
            done = subprocess.run(
                ["bash", "-c", sed.replace("deploy/voiceapp.env", str(env_file))],
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert done.returncode == 0, done.stderr
    probe = textwrap.dedent("""
        import json, sys
        from voiceapp import create_app
        from voiceapp.config import Settings
        env = dict(l.split("=", 1) for l in open(sys.argv[1]).read().splitlines() if l and not l.startswith("#"))
        env["VOICE_SECRET_KEY"] = "rollback-test"
        client = create_app(Settings.from_env(env)).test_client()
        print(json.dumps({"session": client.post("/api/v1/voice/sessions", json={"project": "demo"}).status_code,
                          "healthz": client.get("/healthz").status_code,
                          "metrics": client.get("/metrics").status_code}))
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE", "PROMETHEUS_MULTIPROC"))}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(env_file)], capture_output=True, text=True, timeout=60, env=clean
    )
    assert out.returncode == 0, out.stderr

    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"session": 404, "healthz": 200, "metrics": 200}


def test_compose_override_example_is_valid(tmp_path):
    from tests.test_deploy import _compose

    (override,) = [b for b in doc_blocks("yaml") if "x-managed" in b]
    deploy = shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    (deploy / "compose.override.yaml").write_text(override)

    done = _compose(
        "-f",
        str(deploy / "compose.yaml"),
        "-f",
        str(deploy / "compose.override.yaml"),
        "config",
        "--format",
        "json",
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert (
        services["worker-stt"]["environment"]["REDIS_URL"]
        == yaml.safe_load(override)["x-managed"]["environment"]["REDIS_URL"]
    )
