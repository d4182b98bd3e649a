"""Prometheus metrics of the server runtime (names follow etcd's where etcd has one).

Metrics live in prometheus_client's default registry; the API layer serves /metrics.
Several in-process Members (tests) share them, which is harmless for counters.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LAT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192)

has_leader = Gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.")
is_leader = Gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.")
leader_changes = Counter("etcd_server_leader_changes_seen", "The number of leader changes seen.")
raft_term = Gauge("geokv_raft_term", "Current Raft term of this member.")
raft_commit_index = Gauge("geokv_raft_commit_index", "Raft commit index of this member.")
raft_applied_index = Gauge("geokv_raft_applied_index", "Raft applied index of this member.")
proposals_committed = Counter("etcd_server_proposals_committed", "The total number of consensus proposals committed.")
proposals_applied = Counter("etcd_server_proposals_applied", "The total number of consensus proposals applied.")
proposals_pending = Gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.")
proposals_failed = Counter("etcd_server_proposals_failed", "The total number of failed proposals seen.")
read_indexes = Counter("geokv_read_index_rounds", "ReadIndex rounds issued (each serves a batch of reads).")
wal_fsync_seconds = Histogram("etcd_disk_wal_fsync_duration_seconds",
                              "The latency distributions of fsync called by WAL.", buckets=_LAT_BUCKETS_S)
apply_seconds = Histogram("geokv_apply_batch_duration_seconds",
                          "Time to apply one batch of committed entries to the MVCC store.", buckets=_LAT_BUCKETS_S)
proposal_commit_seconds = Histogram("geokv_proposal_commit_duration_seconds",
                                    "From propose() to the entry applied on the proposing member.",
                                    buckets=_LAT_BUCKETS_S)
snapshots_taken = Counter("geokv_snapshots_taken", "Raft snapshots created by this process.")
snapshots_applied = Counter("geokv_snapshots_applied", "Raft snapshots received and restored.")
peer_messages_dropped = Counter("geokv_peer_inbound_dropped", "Inbound Raft messages dropped (driver inbox full).")
