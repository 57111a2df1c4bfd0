"""Audio blobs in GridFS: uploads from visitors and synthesized replies."""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId
from gridfs import GridFSBucket
from gridfs.errors import NoFile
from pymongo.database import Database

from voiceapp.errors import NotFound

UPLOADS_BUCKET = "voice_uploads"
REPLIES_BUCKET = "voice_audio"
BUCKETS = (UPLOADS_BUCKET, REPLIES_BUCKET)

# Ids arrive from URLs: anything but 24 hex characters is refused before touching MongoDB.
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")


def _bucket(db: Database, bucket: str) -> GridFSBucket:
    if bucket not in BUCKETS:
        raise ValueError(f"unknown audio bucket {bucket!r}; expected one of {', '.join(BUCKETS)}")
    return GridFSBucket(db, bucket_name=bucket)


def parse_audio_id(audio_id: Any) -> ObjectId:
    """The ObjectId of a 24-hex id; NotFound (audio_not_found) for anything else."""
    if not isinstance(audio_id, str) or not _OBJECT_ID.match(audio_id):
        raise NotFound("audio not found", code="audio_not_found")
    return ObjectId(audio_id)


def new_audio_id() -> str:
    """An id to store audio under later (put_audio(..., audio_id=)), so a turn can name its upload first."""
    return str(ObjectId())


def put_audio(
    db: Database,
    data: bytes,
    *,
    bucket: str,
    filename: str,
    content_type: str,
    metadata: dict | None = None,
    audio_id: str | None = None,
) -> str:
    """Store `data` (under `audio_id` when given); returns its id as 24 hex characters."""
    meta = dict(metadata or {})
    # GridFS's own contentType field is deprecated: keep the type in metadata.
    meta["content_type"] = content_type
    if audio_id is not None:
        # GridFS writes the chunks first and the file document last: readers never see half a file.
        _bucket(db, bucket).upload_from_stream_with_id(parse_audio_id(audio_id), filename, bytes(data), metadata=meta)
        return audio_id
    file_id = _bucket(db, bucket).upload_from_stream(filename, bytes(data), metadata=meta)
    return str(file_id)


def get_audio(db: Database, audio_id: str, bucket: str) -> tuple[bytes, dict]:
    """The bytes and info {audio_id, filename, content_type, length, uploaded_at, metadata}."""
    oid = parse_audio_id(audio_id)
    try:
        stream = _bucket(db, bucket).open_download_stream(oid)
    except NoFile:
        raise NotFound("audio not found", code="audio_not_found") from None
    data = stream.read()
    metadata = dict(stream.metadata or {})
    info = {
        "audio_id": str(oid),
        "filename": stream.filename,
        "content_type": metadata.get("content_type", "application/octet-stream"),
        "length": stream.length,
        "uploaded_at": stream.upload_date,
        "metadata": metadata,
    }
    return data, info


def delete_audio(db: Database, audio_id: str, bucket: str) -> bool:
    """Delete the file and its chunks; False when there was nothing to delete."""
    try:
        oid = parse_audio_id(audio_id)
    except NotFound:
        return False
    try:
        _bucket(db, bucket).delete(oid)
    except NoFile:
        return False
    return True
