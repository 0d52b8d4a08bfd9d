"""The ``taxoforge`` command and the local stack it runs: an application of the shared package
``taxoforge`` and a client of the gateway's HTTP API. Nothing in taxoforge, services or
gateway imports it (``make lint`` checks)."""
