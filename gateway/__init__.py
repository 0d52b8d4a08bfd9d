"""The HTTP gateway: the only public door (REST + OpenAPI), in front of NATS and gRPC."""
