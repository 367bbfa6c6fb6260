"""Hurricane: run Django on Kubernetes."""

__version__ = "2.0.0.dev0"
