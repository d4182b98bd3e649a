"""geokv: a geo-distributed, strongly consistent key-value store with the etcd v3 API."""

__version__ = "0.1.0"
