"""The server runtime: the only asyncio code of geokv.

Modules:
  config     ServerConfig from etcd-named flags / a YAML or TOML config file; member and
             cluster IDs (SHA-1 of peer URLs + token, as etcd derives them).
  transport  Peer transport: length-prefixed msgpack frames over asyncio TCP, hello with
             cluster-id check, per-peer bounded queues batched into one write, reconnect
             with capped back-off, forwarded calls, RTT probes (``rtt_ms()``), WAN-delay
             hook (``outbound_delay_s(region)``).
  member     Member: the Raft driver loop (one task owns the RawNode), writes (any member;
             followers forward via Raft), reads (linearizable / lease / serializable /
             bounded), snapshots, recovery, status; leases.py and membership.py hold the
             lease and membership parts of the same class.
  serve      ``python -m geokv.runtime.serve --name n1 ...``: the server process.
  metrics    Prometheus metrics (etcd names where etcd has one).
  watch      the watch hub (owned by the API layer).

Run a 3-member cluster on one machine:
    python -m geokv.runtime.serve --name n1 --data-dir n1.geokv \\
        --listen-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \\
        --initial-cluster n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2480,n3=http://127.0.0.1:2580
    (likewise n2, n3), or from Python: ``geokv.testing.cluster.LocalCluster(3)``.
Add a member: ``etcdctl member add n4 --peer-urls=http://127.0.0.1:2680`` then start n4
with the printed ``--initial-cluster`` and ``--initial-cluster-state existing``.
"""
