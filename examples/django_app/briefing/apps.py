"""Where the watchdog is installed: once per process, when Django is ready."""

from __future__ import annotations

from django.apps import AppConfig


class BriefingConfig(AppConfig):
    """The app's config; ``ready()`` registers the watchdog's tracing processor."""

    name = "briefing"

    def ready(self) -> None:
        """Install the processor. Under ``gunicorn --preload`` this runs once, in the
        master, before the workers are forked: the processor starts nothing until the
        first span, and each forked worker starts clean, with its own pid and its own
        sender thread."""
        from watchdog.processor import install

        # The sidecar's address and this service's name come from AGENTS_WATCHDOG_URL
        # and AGENTS_WATCHDOG_SERVICE when set. replace_default=True watches spans
        # without also exporting traces to OpenAI; drop it to keep both.
        install(service="django-example", replace_default=True)
