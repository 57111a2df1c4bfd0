"""What paid TTS costs: per project, session and UTC day in voice_analytics, with a daily alert and budget.

Default prices (USD per 1,000 characters), overridable by setting:
- ELEVENLABS_PRICE_PER_1K_CHARS=0.30: https://elevenlabs.io/pricing (price of 1,000 additional credits on
  the Creator plan, the rate the seed's SiteLLM voice module assumed). Multilingual v2 uses 1 credit per
  character, Flash/Turbo models 0.5 (https://help.elevenlabs.io, "How many credits do I use"), so the
  price is halved for those models.
- AZURE_PRICE_PER_1K_CHARS=0.016: https://azure.microsoft.com/pricing/details/cognitive-services/speech-services/
  (neural text to speech, pay as you go: $16 per 1M characters).
Piper and the browser voice are free. Cache hits are never charged.

Documents (field `kind`): "tts_cost" per {project, session_id, day}; "tts_cost_project_day" per
{project, day} (budget and gauge); "tts_cost_day" per {day} (alert, flag `alerted`); "cost_alert"
once per day when the day's total passes VOICE_COST_ALERT_THRESHOLD.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from voiceapp import metrics
from voiceapp.config import Settings

log = logging.getLogger(__name__)

PRICE_SETTINGS = {"elevenlabs": "elevenlabs_price_per_1k_chars", "azure": "azure_price_per_1k_chars"}


@dataclass(frozen=True)
class CostRecord:
    """What one recording added and where the day stands."""

    cost_usd: float
    project_today_usd: float
    day_total_usd: float
    alert_raised: bool


def price_per_1k(settings: Settings, provider: str) -> float:
    """USD per 1,000 characters for `provider` (0 for free providers)."""
    field = PRICE_SETTINGS.get(provider)
    return float(getattr(settings, field)) if field else 0.0


def is_free(settings: Settings, provider: str) -> bool:
    """Whether `provider` costs nothing per character."""
    return price_per_1k(settings, provider) == 0.0


def credits_per_char(settings: Settings, provider: str) -> float:
    """Billing units per character: ElevenLabs' Flash and Turbo models bill half a credit."""
    model = settings.elevenlabs_model_id.lower()
    if provider == "elevenlabs" and ("flash" in model or "turbo" in model):
        return 0.5
    return 1.0


def cost_of(settings: Settings, provider: str, characters: int) -> float:
    """USD for synthesizing `characters` characters with `provider`."""
    return round(characters * credits_per_char(settings, provider) * price_per_1k(settings, provider) / 1000.0, 6)


def today(now: datetime | None = None) -> str:
    """The UTC day, e.g. 2026-11-27."""
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")


def _analytics(db: Database, settings: Settings) -> Collection:
    return db[settings.analytics_collection]


def project_cost_today(db: Database, settings: Settings, project: str, now: datetime | None = None) -> float:
    """USD spent on TTS by `project` so far today."""
    doc = _analytics(db, settings).find_one({"kind": "tts_cost_project_day", "project": project, "day": today(now)})
    return float(doc["cost_usd"]) if doc else 0.0


def over_budget(db: Database, settings: Settings, project: str, now: datetime | None = None) -> bool:
    """Whether `project` reached VOICE_PROJECT_DAILY_BUDGET today (never when tracking or the cap is off)."""
    if not settings.enable_cost_tracking or not settings.project_daily_budget:
        return False
    return project_cost_today(db, settings, project, now) >= settings.project_daily_budget


def record(
    db: Database,
    settings: Settings,
    *,
    project: str,
    session_id: str,
    usage: dict[str, int],
    cached_characters: int = 0,
    now: datetime | None = None,
) -> CostRecord | None:
    """Add `usage` ({provider: characters synthesized}) to today's totals; None when tracking is off."""
    if not settings.enable_cost_tracking:
        return None
    now = now or datetime.now(timezone.utc)
    day = today(now)
    costs = {name: cost_of(settings, name, chars) for name, chars in usage.items()}
    total = round(sum(costs.values()), 6)
    characters = sum(usage.values())
    inc: dict[str, float] = {
        "cost_usd": total,
        "characters": characters,
        "cached_characters": cached_characters,
        "requests": 1,
    }
    for name, chars in usage.items():
        inc[f"providers.{name}.characters"] = chars
        inc[f"providers.{name}.cost_usd"] = costs[name]
    stamp = {"$set": {"updated_at": now}, "$setOnInsert": {"created_at": now}}
    coll = _analytics(db, settings)
    coll.update_one(
        {"kind": "tts_cost", "project": project, "session_id": session_id, "day": day},
        {"$inc": inc, **stamp},
        upsert=True,
    )
    project_doc = coll.find_one_and_update(
        {"kind": "tts_cost_project_day", "project": project, "day": day},
        {"$inc": {"cost_usd": total, "characters": characters}, **stamp},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    day_doc = coll.find_one_and_update(
        {"kind": "tts_cost_day", "day": day},
        {"$inc": {"cost_usd": total, "characters": characters}, **stamp},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert project_doc is not None and day_doc is not None  # upserts returning the document after: never None
    metrics.TTS_COST_TODAY.labels(project=project).set(float(project_doc["cost_usd"]))
    alerted = _check_alert(coll, settings, day, float(day_doc["cost_usd"]), now)
    return CostRecord(total, float(project_doc["cost_usd"]), float(day_doc["cost_usd"]), alerted)


def _check_alert(coll: Collection, settings: Settings, day: str, day_total: float, now: datetime) -> bool:
    """Raise the day's alert once (the first process to flip `alerted` wins); True if this call raised it."""
    active = day_total > settings.cost_alert_threshold
    metrics.COST_ALERT_ACTIVE.set(1 if active else 0)
    if not active:
        return False
    flipped = coll.find_one_and_update(
        {"kind": "tts_cost_day", "day": day, "alerted": {"$ne": True}},
        {"$set": {"alerted": True, "alerted_at": now}},
    )
    if flipped is None:
        return False
    coll.insert_one(
        {
            "kind": "cost_alert",
            "day": day,
            "cost_usd": round(day_total, 6),
            "threshold": settings.cost_alert_threshold,
            "created_at": now,
        }
    )
    log.warning(
        "TTS cost alert: %.4f USD spent on %s, over VOICE_COST_ALERT_THRESHOLD=%.2f",
        day_total,
        day,
        settings.cost_alert_threshold,
    )
    return True


def refresh_alert_gauge(db: Database, settings: Settings, now: datetime | None = None) -> bool:
    """Set voice_cost_alert_active from today's stored total (a new day clears it); returns its state."""
    doc = _analytics(db, settings).find_one({"kind": "tts_cost_day", "day": today(now)})
    active = bool(settings.enable_cost_tracking and doc and float(doc["cost_usd"]) > settings.cost_alert_threshold)
    metrics.COST_ALERT_ACTIVE.set(1 if active else 0)
    return active
