"""Client-facing paths that the pipeline puts into events and turn views."""


def audio_url(session_id: str, audio_id: str) -> str:
    """Where a client fetches a reply's audio (it adds its token)."""
    return f"/api/v1/voice/sessions/{session_id}/audio/{audio_id}"
