#!/bin/sh
# One image, several roles: the first argument picks what this container runs.
#   api                 gunicorn serving the Flask API + WebSocket (API_HOST:API_PORT)
#   ws                  the same app for WebSockets only, on WS_PORT (when a proxy sends them elsewhere)
#   worker QUEUE [ARG]  a Celery worker consuming QUEUE (stt, dialog, tts or STT_GPU_QUEUE); extra ARGs go to celery
#   flower [ARG]        Flower, the Celery task inspector, on FLOWER_PORT (default 5555)
#   migrate             create and verify the MongoDB collections and indexes, then exit
#   anything else       run as given (e.g. `voiceapp status`, `sh`)
set -eu

role="${1:-api}"
ACCESS_LOG_FORMAT='%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s "%(a)s"'
[ "$#" -gt 0 ] && shift

case "$role" in
  api|ws)
    port="${API_PORT:-8000}"
    [ "$role" = ws ] && port="${WS_PORT:?the ws role needs WS_PORT}"
    # gevent: an idle WebSocket costs a few greenlets, not an OS thread. The access log shows the path
    # without its query string (%(U)s, not %(r)s): turn, audio and WebSocket URLs carry ?token=.
    exec gunicorn --worker-class gevent --worker-connections "$(( ${WS_MAX_CONNECTIONS:-1000} + 100 ))" \
      --workers "${API_WORKERS:-1}" --bind "${API_HOST:-0.0.0.0}:${port}" --timeout 120 --graceful-timeout 30 \
      --access-logfile - --access-logformat "$ACCESS_LOG_FORMAT" "$@" voiceapp.wsgi:app
    ;;
  worker)
    queue="${1:?usage: worker QUEUE (stt, dialog, tts or the GPU queue)}"
    shift
    # Pool and concurrency come from VOICE_WORKER_POOL / VOICE_WORKER_CONCURRENCY (threads, 4): one model
    # copy per container serving several turns; scale further with replicas (docker compose up --scale).
    exec celery -A tasks.worker worker -Q "$queue" -n "${queue}@%h" \
      --loglevel "${VOICE_LOG_LEVEL:-info}" "$@"
    ;;
  flower)
    exec celery -A tasks.worker flower --port="${FLOWER_PORT:-5555}" --address="${FLOWER_ADDRESS:-0.0.0.0}" "$@"
    ;;
  migrate)
    exec python -m migrations "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
