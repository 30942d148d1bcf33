"""URLs of the example."""

from __future__ import annotations

from briefing import views
from django.urls import path

urlpatterns = [path("brief", views.brief)]
