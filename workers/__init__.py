"""Celery workers for video-mm: ``app`` builds the Celery app from Settings, ``tasks`` holds the
thin tasks that call the pipeline's steps. Start one with ``vmm worker -Q cpu,gpu,index``."""
