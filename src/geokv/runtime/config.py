"""Server configuration: etcd-named flags and a YAML/TOML config file with the same keys.

Precedence: built-in defaults < config file (``--config-file``) < command-line flags.
(etcd ignores flags when a config file is given; geokv lets explicit flags override the
file, which is what a user who passes both expects.) Keys in the file may use etcd's
hyphenated names (``data-dir``) or underscores (``data_dir``).

With no flags at all the result is etcd's default single-node member: name ``default``,
clients on localhost:2379, peers on localhost:2380, data in ``./default.geokv``.

Member IDs and the cluster ID are derived the way etcd derives them: a SHA-1 over the
sorted peer URLs plus the cluster token (members), and over the sorted member IDs plus
the token (cluster), first 8 bytes big-endian. Every member computes the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

DEFAULT_MAX_REQUEST_BYTES = 1572864  # 1.5 MiB, etcd's default
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024 * 1024 * 1024  # 2 GiB, etcd's default
READ_MODES = ("linearizable", "lease", "serializable", "bounded")
LINEARIZABLE_READS = ("lease", "quorum")
#: With --heartbeat-interval and --election-timeout both unset, the member starts with
#: these (conservative) timeouts and a fixed tick of AUTO_TICK_MS; the geo layer then
#: applies timeouts derived from the RTTs at runtime (never longer than the start ones).
AUTO_TICK_MS = 10
AUTO_START_HEARTBEAT_MS = 100
AUTO_START_ELECTION_MS = 1000
MAX_PLACEMENT_DELAY_S = 3600.0
MAX_MEMBERS = 64  # bound on --initial-cluster entries


class ConfigError(ValueError):
    """A user mistake in flags or in the config file; the message says which and why."""


@dataclass(slots=True)
class ServerConfig:
    name: str = "default"
    data_dir: str = ""
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    advertise_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    region: str = "local"
    zone: str = ""
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    #: True when the user set neither --heartbeat-interval nor --election-timeout: the
    #: geo layer may then change them at runtime (parse_args sets it; a ServerConfig
    #: built in code keeps fixed timeouts unless it sets this).
    timeouts_auto: bool = False
    #: Length of one Raft tick; 0 = one heartbeat interval (etcd's model). Fixed for the
    #: life of the process: runtime timeout changes change tick counts, never the tick.
    tick_ms: int = 0
    snapshot_count: int = 100000
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    listen_metrics_urls: list[str] = field(default_factory=list)
    config_file: str = ""
    # geokv's own settings (the geo layer reads these):
    leader_preference: str = ""
    read_mode_default: str = "linearizable"
    #: How a linearizable read is made linearizable: "lease" (the leader's lease when it
    #: is valid, else a ReadIndex quorum round; etcd's ReadOnlyLeaseBased) or "quorum"
    #: (always a ReadIndex quorum round; etcd's default ReadOnlySafe).
    linearizable_read: str = "lease"
    # leader placement delays (seconds; the geo layer reads these):
    leader_return_delay_s: float = 5.0
    leader_cooldown_s: float = 10.0
    follow_writes_dwell_s: float = 20.0
    wan_emulation: str = ""
    rtt: str = ""
    log_level: str = "info"
    grpc_edge: str = ""  # the client gRPC server: native (geokv.edge), grpcio, "" = the default

    # --- derived ---------------------------------------------------------------------
    def peers(self) -> dict[str, list[str]]:
        """name -> peer URLs, parsed from --initial-cluster (``n1=http://h:p,n2=...``)."""
        return parse_initial_cluster(self.initial_cluster)

    @property
    def member_id(self) -> int:
        return member_id_for(self.initial_advertise_peer_urls, self.initial_cluster_token)

    def initial_member_ids(self) -> dict[str, int]:
        return {n: member_id_for(urls, self.initial_cluster_token) for n, urls in self.peers().items()}

    @property
    def cluster_id(self) -> int:
        return cluster_id_for(self.initial_member_ids().values(), self.initial_cluster_token)

    @property
    def wal_dir(self) -> str:
        return os.path.join(self.data_dir, "member", "wal")

    @property
    def db_dir(self) -> str:
        return os.path.join(self.data_dir, "member", "db")

    def peer_listen_address(self) -> tuple[str, int]:
        return url_host_port(self.listen_peer_urls[0])

    def client_listen_address(self) -> tuple[str, int]:
        return url_host_port(self.listen_client_urls[0])


# --- IDs ------------------------------------------------------------------------------
def member_id_for(peer_urls: list[str], token: str) -> int:
    b = "".join(sorted(peer_urls)).encode() + token.encode()
    mid = struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]
    return mid or 1


def cluster_id_for(member_ids, token: str) -> int:
    b = b"".join(struct.pack(">Q", i) for i in sorted(member_ids)) + token.encode()
    cid = struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]
    return cid or 1


# --- parsing helpers ------------------------------------------------------------------
def url_host_port(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:2380`` -> ("127.0.0.1", 2380); raises ConfigError."""
    try:
        u = urlsplit(url if "://" in url else "http://" + url)
        host, port = u.hostname, u.port
    except ValueError as exc:
        raise ConfigError(f"invalid URL {url!r}: {exc}") from None
    if not host or port is None:
        raise ConfigError(f"invalid URL {url!r}: expected scheme://host:port")
    if u.scheme not in ("http", "https", "unix", "unixs"):
        raise ConfigError(f"invalid URL {url!r}: unsupported scheme {u.scheme!r}")
    return host, port


def _url_list(value, key: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        items = [s.strip() for s in str(value).split(",")]
    items = [s for s in items if s]
    for s in items:
        url_host_port(s)
    if not items:
        raise ConfigError(f"--{key} must name at least one URL")
    return items


def parse_initial_cluster(s: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in [p.strip() for p in s.split(",") if p.strip()]:
        if "=" not in part:
            raise ConfigError(f"--initial-cluster entry {part!r} is not name=url")
        name, url = part.split("=", 1)
        name, url = name.strip(), url.strip()
        if not name:
            raise ConfigError(f"--initial-cluster entry {part!r} has an empty name")
        url_host_port(url)
        out.setdefault(name, []).append(url)
    if len(out) > MAX_MEMBERS:
        raise ConfigError(f"--initial-cluster names {len(out)} members; the limit is {MAX_MEMBERS}")
    return out


# name in flags/files -> (field name, kind)
_KEYS: dict[str, tuple[str, str]] = {
    "name": ("name", "str"),
    "data-dir": ("data_dir", "str"),
    "listen-client-urls": ("listen_client_urls", "urls"),
    "advertise-client-urls": ("advertise_client_urls", "urls"),
    "listen-peer-urls": ("listen_peer_urls", "urls"),
    "initial-advertise-peer-urls": ("initial_advertise_peer_urls", "urls"),
    "initial-cluster": ("initial_cluster", "str"),
    "initial-cluster-state": ("initial_cluster_state", "str"),
    "initial-cluster-token": ("initial_cluster_token", "str"),
    "region": ("region", "str"),
    "zone": ("zone", "str"),
    "heartbeat-interval": ("heartbeat_interval_ms", "int"),
    "election-timeout": ("election_timeout_ms", "int"),
    "snapshot-count": ("snapshot_count", "int"),
    "max-request-bytes": ("max_request_bytes", "int"),
    "quota-backend-bytes": ("quota_backend_bytes", "int"),
    "listen-metrics-urls": ("listen_metrics_urls", "urls0"),
    "leader-preference": ("leader_preference", "str"),
    "read-mode-default": ("read_mode_default", "str"),
    "wan-emulation": ("wan_emulation", "str"),
    "rtt": ("rtt", "str"),
    "log-level": ("log_level", "str"),
    "grpc-edge": ("grpc_edge", "str"),
    "linearizable-read": ("linearizable_read", "str"),
    "leader-return-delay": ("leader_return_delay_s", "duration"),
    "leader-cooldown": ("leader_cooldown_s", "duration"),
    "follow-writes-dwell": ("follow_writes_dwell_s", "duration"),
}

_HELP: dict[str, str] = {
    "heartbeat-interval": "ms between leader heartbeats. Unset (and --election-timeout unset): "
                          "derived from the regions' RTTs and adapted at runtime",
    "election-timeout": "ms of silence before a follower campaigns. Unset (and --heartbeat-interval "
                        "unset): derived from the regions' RTTs and adapted at runtime",
    "region": "this member's region (e.g. us-east)",
    "zone": "this member's zone",
    "leader-preference": "regions in order of preference for the leader (e.g. us-east,eu-west); "
                         "'follow-writes[,region...]' puts it where most writes come from",
    "read-mode-default": "read mode when a request names none: " + "|".join(READ_MODES),
    "linearizable-read": "lease (default): linearizable reads use the leader's lease when valid, "
                         "else a ReadIndex quorum round (etcd's ReadOnlyLeaseBased); quorum: always "
                         "the quorum round (etcd's ReadOnlySafe, no clock assumption)",
    "leader-return-delay": "how long the preferred region must stay healthy and caught up before "
                           "leadership moves back to it (e.g. 5s, 500ms; default 5s)",
    "leader-cooldown": "no placement transfer this soon after a leader change (default 10s)",
    "follow-writes-dwell": "follow-writes: how long a region must lead the write rate before the "
                           "leader moves there (default 20s)",
    "wan-emulation": "on: delay peer traffic by the one-way delay between regions "
                     "(jitter=5ms, loss=0.001 imply on)",
    "rtt": "RTT overrides, e.g. eu-west:ap-south=120ms,... or @file",
    "grpc-edge": "the client gRPC server: native (default; geokv's own HTTP/2 edge) or grpcio (grpc.aio)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; we want a ConfigError
        raise ConfigError(message)


def _build_argparser() -> _Parser:
    p = _Parser(prog="geokv-server", add_help=True,
                description="geokv server (etcd v3 API over Raft). Flags use etcd's names.")
    p.add_argument("--config-file", dest="config_file", default=None)
    for key, (_fname, _kind) in _KEYS.items():
        p.add_argument("--" + key, dest=key.replace("-", "_"), default=None, help=_HELP.get(key))
    return p


def _convert(key: str, kind: str, value):
    if kind == "str":
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return "" if value is None else str(value)
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"--{key} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--{key} must be an integer, got {value!r}") from None
    if kind == "urls":
        return _url_list(value, key)
    if kind == "duration":
        return parse_duration_s(key, value)
    if kind == "urls0":
        if value in (None, "", []):
            return []
        return _url_list(value, key)
    raise AssertionError(kind)


def parse_duration_s(key: str, value) -> float:
    """``5s``, ``500ms``, ``2m`` or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"--{key} must be a duration such as 5s or 500ms, got {value!r}")
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        raw = str(value).strip().lower()
        scale = 1.0
        for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
            if raw.endswith(suffix):
                raw, scale = raw[: -len(suffix)].strip(), mult
                break
        try:
            v = float(raw) * scale
        except ValueError:
            raise ConfigError(f"--{key} must be a duration such as 5s or 500ms, got {value!r}") from None
    if not 0.0 <= v <= MAX_PLACEMENT_DELAY_S:
        raise ConfigError(f"--{key} must be between 0 and {MAX_PLACEMENT_DELAY_S:.0f} s, got {value!r}")
    return v


def _load_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode())
        else:
            import yaml

            data = yaml.safe_load(raw) or {}
    except Exception as exc:  # parser errors from yaml/toml: a user mistake
        raise ConfigError(f"cannot parse config file {path!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of keys to values")
    out = {}
    for k, v in data.items():
        key = str(k).replace("_", "-")
        if key in ("heartbeat-interval-ms", "election-timeout-ms"):
            key = key[: -len("-ms")]
        if key not in _KEYS:
            raise ConfigError(f"config file {path!r}: unknown key {k!r}")
        out[key] = v
    return out


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    """Build and validate a ServerConfig; raises ConfigError with a clear message."""
    ns = _build_argparser().parse_args([] if argv is None else list(argv))
    values: dict[str, object] = {}
    cfg = ServerConfig()
    if ns.config_file:
        values.update(_load_file(ns.config_file))
        cfg.config_file = ns.config_file
    for key in _KEYS:
        v = getattr(ns, key.replace("-", "_"))
        if v is not None:
            values[key] = v
    for key, v in values.items():
        fname, kind = _KEYS[key]
        setattr(cfg, fname, _convert(key, kind, v))
    if "heartbeat-interval" not in values and "election-timeout" not in values:
        cfg.timeouts_auto = True
        cfg.tick_ms = AUTO_TICK_MS
        cfg.heartbeat_interval_ms = AUTO_START_HEARTBEAT_MS
        cfg.election_timeout_ms = AUTO_START_ELECTION_MS
    finish(cfg, explicit=set(values))
    return cfg


def finish(cfg: ServerConfig, explicit: set[str] | frozenset = frozenset()) -> ServerConfig:
    """Fill defaults that depend on other settings, then validate."""
    if not cfg.name:
        raise ConfigError("--name must not be empty")
    if not cfg.data_dir:
        cfg.data_dir = f"{cfg.name}.geokv"
    if "advertise-client-urls" not in explicit and "listen-client-urls" in explicit:
        cfg.advertise_client_urls = list(cfg.listen_client_urls)
    if "initial-advertise-peer-urls" not in explicit and "listen-peer-urls" in explicit:
        cfg.initial_advertise_peer_urls = list(cfg.listen_peer_urls)
    if not cfg.initial_cluster:
        cfg.initial_cluster = ",".join(f"{cfg.name}={u}" for u in cfg.initial_advertise_peer_urls)
    return validate(cfg)


def validate(cfg: ServerConfig) -> ServerConfig:
    if cfg.initial_cluster_state not in ("new", "existing"):
        raise ConfigError(
            f"--initial-cluster-state must be 'new' or 'existing', got {cfg.initial_cluster_state!r}"
        )
    if cfg.heartbeat_interval_ms <= 0:
        raise ConfigError("--heartbeat-interval must be > 0 (milliseconds)")
    if cfg.election_timeout_ms < 5 * cfg.heartbeat_interval_ms:
        raise ConfigError(
            f"--election-timeout ({cfg.election_timeout_ms} ms) must be at least 5 times "
            f"--heartbeat-interval ({cfg.heartbeat_interval_ms} ms)"
        )
    if cfg.election_timeout_ms > 50000:
        raise ConfigError("--election-timeout must be at most 50000 ms")
    if cfg.snapshot_count <= 0:
        raise ConfigError("--snapshot-count must be > 0")
    if cfg.max_request_bytes <= 0:
        raise ConfigError("--max-request-bytes must be > 0")
    if cfg.quota_backend_bytes <= 0:
        cfg.quota_backend_bytes = DEFAULT_QUOTA_BACKEND_BYTES
    if cfg.linearizable_read not in LINEARIZABLE_READS:
        raise ConfigError(f"--linearizable-read must be one of {', '.join(LINEARIZABLE_READS)}, "
                          f"got {cfg.linearizable_read!r}")
    if cfg.tick_ms < 0 or (cfg.tick_ms and cfg.heartbeat_interval_ms % cfg.tick_ms):
        raise ConfigError(f"tick {cfg.tick_ms} ms must divide --heartbeat-interval "
                          f"({cfg.heartbeat_interval_ms} ms)")
    if cfg.grpc_edge not in ("", "native", "grpcio"):
        raise ConfigError(f"--grpc-edge must be 'native' or 'grpcio', got {cfg.grpc_edge!r}")
    if cfg.read_mode_default not in READ_MODES:
        raise ConfigError(f"--read-mode-default must be one of {', '.join(READ_MODES)}")
    peers = cfg.peers()
    if cfg.name not in peers:
        raise ConfigError(f"--initial-cluster does not name this member ({cfg.name!r})")
    if sorted(peers[cfg.name]) != sorted(cfg.initial_advertise_peer_urls):
        raise ConfigError(
            f"--initial-cluster has {cfg.name}={','.join(peers[cfg.name])} but "
            f"--initial-advertise-peer-urls is {','.join(cfg.initial_advertise_peer_urls)}"
        )
    ids = cfg.initial_member_ids()
    if len(set(ids.values())) != len(ids):
        raise ConfigError("--initial-cluster has two members with the same peer URLs")
    return cfg


def config_fields() -> list[str]:
    return [f.name for f in fields(ServerConfig)]
