"""Celery side of voiceapp: the app factory, the worker entry module and one thin task module per stage."""
