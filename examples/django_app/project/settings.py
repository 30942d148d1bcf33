"""Settings of the example: one app, no database, no templates."""

from __future__ import annotations

import os

# A real project reads its secret from the environment and fails without it.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["briefing.apps.BriefingConfig"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
