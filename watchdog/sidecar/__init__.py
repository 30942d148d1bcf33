"""The sidecar: ``agents-watchdog serve``. Apps never import this package."""
