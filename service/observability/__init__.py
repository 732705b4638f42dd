"""How the service is watched from outside: Prometheus metrics (`metrics`), OpenTelemetry
traces (`tracing`), structured logs with a request id (`logs`), and the ASGI middleware
that ties them to each request (`middleware`)."""
