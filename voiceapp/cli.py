"""The `voiceapp` command: run the local stack, migrate, load knowledge, ask a spoken question."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests

from .config import Settings, SettingsError
from .errors import VoiceError
from .turns import TurnStatus, is_terminal


def _devstack(required: bool = True) -> Any:
    """The local stack supervisor (the top-level `devstack` package of a source checkout), imported only here.

    The service never needs it: the container image ships without it, so there the commands that talk to a
    running stack use the environment's addresses as they are, and up/down/status say what is missing.
    """
    try:
        import devstack
    except ImportError:
        if required:
            raise click.ClickException(
                "the local stack tool (devstack/) is not installed here: run `voiceapp up/down/status` from a source "
                "checkout (`make install`); a deployment starts its services itself (docs/deployment.md)"
            ) from None
        return None
    return devstack


def _settings() -> Settings:
    """Settings from the environment, completed with the running local stack's addresses (when there is one)."""
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        raise click.ClickException(str(err)) from None
    stack = _devstack(required=False)
    return stack.resolve(settings) if stack else settings


class _Group(click.Group):
    """Every command: a bad environment value prints its one-line SettingsError, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingsError as err:
            raise click.ClickException(str(err)) from None


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """voiceapp: spoken questions answered from a site's own knowledge.

    Typical local use: `voiceapp up`, `voiceapp migrate`, `voiceapp kb add --project demo FILE...`,
    `voiceapp ask --project demo question.wav`, then `voiceapp down`.
    """


@main.command()
@click.option("--flower", is_flag=True, help="Also start Flower (task inspector) on a local port.")
@click.option(
    "--mongo-engine",
    type=click.Choice(["sqlite", "memory"]),
    default="sqlite",
    show_default=True,
    help="Storage of the local MongoDB-wire server when MONGO_URI is not set.",
)
def up(flower: bool, mongo_engine: str) -> None:
    """Start Redis (unless REDIS_URL answers), MongoDB-wire (unless MONGO_URI), the API and one worker per queue."""
    stack = _devstack()

    try:
        settings = Settings.from_env()
        if "VOICE_OPEN_PROJECTS" not in os.environ and settings.api_host in LOOPBACK:
            # The local demo projects need no key while the API is reachable from this machine only; on any
            # other address open projects are opt-in (VOICE_OPEN_PROJECTS=demo). Empty closes them here too.
            settings = settings.replace(open_projects=("demo", "demo-ru"))
        state = stack.up(settings, flower=flower, mongo_engine=mongo_engine)
    except (SettingsError, VoiceError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    _print_status(stack.status(Settings.from_env()))
    click.echo(f"API: {state.get('api_url', '')}")
    if flower:
        user = stack.flower_auth(settings)[0]
        click.echo(f"Flower: basic auth, user {user}, password in {stack.run_dir(settings) / 'flower_password'}")


@main.command()
def down() -> None:
    """Stop what `voiceapp up` started (and nothing else)."""
    stack = _devstack()

    stopped = stack.down(Settings.from_env())
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _print_status(status: dict) -> None:
    for name, info in status.items():
        state = "up" if info.get("alive") else "DOWN"
        where = info.get("url") or ""
        click.echo(f"{name:<8} {state:<5} pid={info.get('pid', '-')!s:<8} {where}")


@main.command()
def status() -> None:
    """Report each process of the local stack; exits 1 when one is down."""
    stack = _devstack()

    info = stack.status(Settings.from_env())
    if not info:
        click.echo("the local stack is not running (voiceapp up starts it)")
        sys.exit(1)
    _print_status(info)
    sys.exit(0 if all(v.get("alive") for v in info.values()) else 1)


@main.command()
def migrate() -> None:
    """Create the voice collections and indexes (idempotent), then verify them."""
    import migrations

    from .storage.mongo import get_db

    settings = _settings()
    db = get_db(settings)
    report = migrations.migrate(db, settings)
    click.echo(str(report))
    problems = migrations.verify(db, settings)
    for problem in problems:
        click.echo(f"MISSING: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo("schema verified")


@main.group()
def kb() -> None:
    """Manage a project's knowledge base."""


@kb.command("add")
@click.option("--project", required=True, help="Project the knowledge belongs to.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def kb_add(project: str, files: tuple[Path, ...]) -> None:
    """Load Markdown, text or HTML FILES into PROJECT (a file loaded again replaces its passages)."""
    from .dialog.knowledge import add_documents
    from .storage.mongo import get_db

    settings = _settings()
    docs = [(path.name, path.read_text(encoding="utf-8")) for path in files]
    count = add_documents(get_db(settings), settings, project, docs)
    click.echo(f"{project}: {count} passages from {len(files)} file(s)")


@main.group()
def report() -> None:
    """Reports for the site owner."""


@report.command("unanswered")
@click.option("--project", required=True, help="Project whose refused questions to list.")
@click.option("--since", default="7d", show_default=True, help="How far back: 24h, 7d, 2w.")
def report_unanswered(project: str, since: str) -> None:
    """Questions the assistant could not answer, near-duplicates grouped, most frequent first."""
    from .storage.mongo import get_db
    from .storage.unanswered import grouped, parse_since

    settings = _settings()
    try:
        groups = grouped(get_db(settings), settings, project, parse_since(since))
    except VoiceError as err:
        raise click.ClickException(err.message) from None
    if not groups:
        click.echo(f"{project}: no unanswered questions in the last {since}")
    for group in groups:
        others = len(group["variants"]) - 1
        more = f" (+{others} similar wording{'s' if others > 1 else ''})" if others else ""
        click.echo(f"{group['count']:5d}  {group['question']}{more}")


@main.group()
def project() -> None:
    """Manage projects: keys that open sessions, allowed browser origins."""


@project.command("create")
@click.option("--project", "name", required=True, help="Project name (letters, digits, . _ -).")
@click.option("--origin", "origins", multiple=True, help="Allowed browser origin, e.g. https://shop.example (repeat).")
@click.option(
    "--language", default=None, help="Default session language, e.g. ru or en-US; 'auto' detects it per utterance."
)
@click.option(
    "--max-sessions", type=int, default=None, help="Its own live-session quota (default VOICE_PROJECT_MAX_SESSIONS)."
)
@click.option(
    "--max-websockets", type=int, default=None, help="Its own WebSocket quota (default VOICE_PROJECT_MAX_WEBSOCKETS)."
)
def project_create(
    name: str, origins: tuple[str, ...], language: str | None, max_sessions: int | None, max_websockets: int | None
) -> None:
    """Create PROJECT (or add a key to it) and print the new key on its own line; it is stored only hashed."""
    from .storage.mongo import get_db
    from .storage.projects import create_key, set_quota

    settings = _settings()
    try:
        _check_language(settings, language)
        key = create_key(get_db(settings), settings, name, origins, language)
        set_quota(get_db(settings), settings, name, max_sessions, max_websockets)
    except VoiceError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"project {name}: new key (shown once, keep it secret)", err=True)
    click.echo(key)


@main.command()
@click.option("--session", "session_id", required=True, help="Session id (32 hex characters) to erase.")
def forget(session_id: str) -> None:
    """Erase one visitor's session: its turns, recordings, uncached reply audio, session document and events."""
    import redis as redis_lib

    from .storage.mongo import get_db
    from .storage.retention import erase_session

    settings = _settings()
    try:
        erased = erase_session(get_db(settings), settings, session_id, redis_lib.Redis.from_url(settings.redis_url))
    except VoiceError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"session {session_id}: erased " + ", ".join(f"{n} {what}" for what, n in erased.items()))


@main.command("retention-sweep")
def retention_sweep() -> None:
    """Delete recordings and uncached reply audio past VOICE_RECORDING_RETENTION now (the API also does it)."""
    from .storage.mongo import get_db
    from .storage.retention import sweep

    settings = _settings()
    click.echo(", ".join(f"{n} {what} deleted" for what, n in sweep(get_db(settings), settings).items()))


@project.command("language")
@click.option("--project", "name", required=True, help="Project name.")
@click.argument("language", required=False)
def project_language(name: str, language: str | None) -> None:
    """Set the default session LANGUAGE of PROJECT (ru, en-US, auto); without LANGUAGE, clear it."""
    from .storage.mongo import get_db
    from .storage.projects import set_language

    settings = _settings()
    try:
        _check_language(settings, language)
        set_language(get_db(settings), settings, name, language)
    except VoiceError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"project {name}: language {language or '(default: ' + settings.default_language + ')'}")


def _check_language(settings: Settings, language: str | None) -> None:
    """Refuse a language the configured recognition models cannot hear (what sessions would get)."""
    from .errors import BadRequest
    from .stt.registry import language_problem

    problem = language_problem(settings, language) if language else None
    if problem:
        raise BadRequest(f"language {language!r} is not supported here: {problem}", code="language_unsupported")


@project.command("quota")
@click.option("--project", "name", required=True, help="Project name.")
@click.option("--max-sessions", type=int, default=None, help="Live sessions it may hold (within the global limit).")
@click.option("--max-websockets", type=int, default=None, help="WebSockets it may hold across API processes.")
def project_quota(name: str, max_sessions: int | None, max_websockets: int | None) -> None:
    """Give PROJECT its own session / WebSocket quota; prints the quota in force."""
    from .storage.mongo import get_db
    from .storage.projects import quota, set_quota

    settings = _settings()
    db = get_db(settings)
    try:
        set_quota(db, settings, name, max_sessions, max_websockets)
    except VoiceError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"project {name}: quota {quota(db, settings, name) or 'defaults (VOICE_PROJECT_MAX_*)'}")


def _api(settings: Settings) -> str:
    """Base URL of the HTTP API: the running local stack's, else the configured host and port."""
    stack = _devstack(required=False)
    if stack:
        return stack.api_url(settings)
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    return f"http://{host}:{settings.api_port}"


def _check(response: requests.Response) -> dict:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise click.ClickException(f"HTTP {response.status_code} {message}")
    return response.json() if response.content else {}


@main.command()
@click.option("--project", required=True, help="Project whose knowledge answers.")
@click.option("--language", default=None, help="Session language, e.g. en-US, ru or auto (default: the project's).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the reply audio (default: <VOICEAPP_HOME>/reply-<turn>.wav).",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the turn as JSON.")
@click.option("--text", default=None, help="Ask a typed question instead of AUDIO_FILE (no recognition).")
@click.argument("audio_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ask(
    project: str,
    language: str | None,
    out: Path | None,
    timeout: float,
    as_json: bool,
    text: str | None,
    audio_file: Path | None,
) -> None:
    """Ask one question (AUDIO_FILE, or --text) through the running stack (HTTP + workers); save the reply audio."""
    if (text is None) == (audio_file is None):
        raise click.UsageError("give either AUDIO_FILE or --text")
    settings = _settings()
    base = _api(settings)
    body = {"project": project, **({"language": language} if language else {})}
    try:
        session = _check(requests.post(f"{base}/api/v1/voice/sessions", json=body, timeout=10))
        auth = {"Authorization": f"Bearer {session['token']}"}
        sid = session["session_id"]
        started = time.monotonic()
        turn = _check(_post_question(f"{base}/api/v1/voice/sessions/{sid}/turns", auth, text, audio_file))
        result = _wait_turn(base, sid, turn["turn_id"], auth, timeout)
        elapsed = time.monotonic() - started
    except requests.ConnectionError:
        raise click.ClickException(f"cannot reach the API at {base}: is the stack up? (voiceapp up)") from None
    if result.get("audio_url"):
        out = out or Path(settings.home) / f"reply-{result['turn_id']}.wav"
        audio = requests.get(f"{base}{result['audio_url']}", headers=auth, timeout=30)
        if audio.status_code != 200:
            _check(audio)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(audio.content)
    if as_json:
        click.echo(json.dumps({**result, "reply_audio_path": str(out) if result.get("audio_url") else None}, indent=2))
    else:
        click.echo(f"transcript: {result.get('transcript')}")
        click.echo(f"intent:     {result.get('intent')}")
        click.echo(f"answer:     {result.get('reply_text')}")
        click.echo(f"audio:      {out if result.get('audio_url') else '(none)'}")
        click.echo(f"turn time:  {elapsed:.2f} s")
    if result.get("status") != TurnStatus.DONE:
        error = result.get("error") or {}
        raise click.ClickException(f"turn ended with status {result.get('status')}: {error.get('message', '')}")


def _post_question(url: str, auth: dict, text: str | None, audio_file: Path | None) -> requests.Response:
    """Start a turn: a typed question as JSON, or the audio file's bytes."""
    if text is not None:
        return requests.post(url, json={"text": text}, headers=auth, timeout=30)
    if audio_file is None:
        raise click.UsageError("give an audio file or --text")
    headers = {**auth, "Content-Type": "application/octet-stream"}
    return requests.post(url, data=audio_file.read_bytes(), headers=headers, timeout=30)


def _wait_turn(base: str, sid: str, turn_id: str, auth: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        wait = max(1.0, min(25.0, deadline - time.monotonic()))
        result = _check(
            requests.get(
                f"{base}/api/v1/voice/sessions/{sid}/turns/{turn_id}",
                params={"wait": wait},
                headers=auth,
                timeout=wait + 10,
            )
        )
        if is_terminal(result.get("status")) or time.monotonic() >= deadline:
            return result


if __name__ == "__main__":
    main()
