"""HTTP on Tornado, apart from Django: Tornado's private internals in one module
(:mod:`.tornado_compat`), the event loop, request bodies and their refusal, the
forwarded headers, and the base of Hurricane's own Tornado handlers."""
