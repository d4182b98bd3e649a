"""ServerConfig: etcd defaults, flags, config files, derived IDs, clear errors."""

import pytest

from geokv.runtime.config import ConfigError, ServerConfig, member_id_for, parse_args


def test_no_flags_is_etcds_single_node_default():
    cfg = parse_args([])
    assert cfg.name == "default"
    assert cfg.data_dir == "default.geokv"
    assert cfg.listen_client_urls == ["http://localhost:2379"]
    assert cfg.listen_peer_urls == ["http://localhost:2380"]
    assert cfg.initial_cluster == "default=http://localhost:2380"
    assert cfg.initial_cluster_state == "new"
    assert cfg.max_request_bytes == 1572864
    assert cfg.heartbeat_interval_ms == 100 and cfg.election_timeout_ms == 1000
    assert list(cfg.initial_member_ids().values()) == [cfg.member_id]


def test_flags_with_etcd_names():
    cfg = parse_args([
        "--name", "n1", "--data-dir", "/tmp/x", "--listen-client-urls", "http://127.0.0.1:1",
        "--listen-peer-urls", "http://127.0.0.1:2", "--initial-advertise-peer-urls", "http://127.0.0.1:2",
        "--initial-cluster", "n1=http://127.0.0.1:2,n2=http://127.0.0.1:3",
        "--initial-cluster-token", "tok", "--region", "eu-west", "--zone", "a",
        "--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-count", "7",
        "--leader-preference", "eu-west,us-east", "--read-mode-default", "lease",
        "--wan-emulation", "on", "--rtt", "eu-west:us-east=80ms",
    ])
    assert cfg.region == "eu-west" and cfg.zone == "a"
    assert cfg.advertise_client_urls == ["http://127.0.0.1:1"]  # follows the listen URL
    assert cfg.snapshot_count == 7 and cfg.read_mode_default == "lease"
    assert cfg.leader_preference == "eu-west,us-east" and cfg.rtt == "eu-west:us-east=80ms"
    assert set(cfg.peers()) == {"n1", "n2"}


def test_ids_are_deterministic_and_agree_across_members():
    common = ["--initial-cluster", "a=http://127.0.0.1:2,b=http://127.0.0.1:3", "--initial-cluster-token", "t"]
    a = parse_args(["--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:2", *common])
    b = parse_args(["--name", "b", "--initial-advertise-peer-urls", "http://127.0.0.1:3", *common])
    assert a.cluster_id == b.cluster_id
    assert a.member_id != b.member_id
    assert a.member_id == member_id_for(["http://127.0.0.1:2"], "t")
    other = parse_args(["--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:2",
                        "--initial-cluster", "a=http://127.0.0.1:2,b=http://127.0.0.1:3",
                        "--initial-cluster-token", "other"])
    assert other.cluster_id != a.cluster_id


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "name: y1\ndata-dir: /tmp/y\nheartbeat-interval: 20\nelection-timeout: 200\n"
              "listen-peer-urls: http://127.0.0.1:9\ninitial-advertise-peer-urls: http://127.0.0.1:9\n"
              "initial-cluster: y1=http://127.0.0.1:9\nregion: ap-south\n"),
    (".toml", 'name = "y1"\ndata_dir = "/tmp/y"\nheartbeat-interval = 20\nelection-timeout = 200\n'
              'listen-peer-urls = "http://127.0.0.1:9"\ninitial-advertise-peer-urls = "http://127.0.0.1:9"\n'
              'initial-cluster = "y1=http://127.0.0.1:9"\nregion = "ap-south"\n'),
])
def test_config_file_yaml_and_toml(tmp_path, suffix, text):
    p = tmp_path / ("c" + suffix)
    p.write_text(text)
    cfg = parse_args(["--config-file", str(p)])
    assert (cfg.name, cfg.data_dir, cfg.heartbeat_interval_ms, cfg.region) == ("y1", "/tmp/y", 20, "ap-south")
    # an explicit flag overrides the file
    cfg2 = parse_args(["--config-file", str(p), "--region", "us-east"])
    assert cfg2.region == "us-east"


@pytest.mark.parametrize("argv,needle", [
    (["--initial-cluster-state", "maybe"], "initial-cluster-state"),
    (["--heartbeat-interval", "abc"], "integer"),
    (["--heartbeat-interval", "100", "--election-timeout", "200"], "at least 5 times"),
    (["--listen-peer-urls", "nonsense"], "invalid URL"),
    (["--initial-cluster", "other=http://localhost:2380"], "does not name this member"),
    (["--read-mode-default", "fast"], "read-mode-default"),
    (["--no-such-flag"], "unrecognized"),
    (["--config-file", "/nonexistent/geokv.yaml"], "cannot read config file"),
])
def test_user_mistakes_give_clear_errors(argv, needle):
    with pytest.raises(ConfigError) as ei:
        parse_args(argv)
    assert needle in str(ei.value)


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\nbogus-key: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_args(["--config-file", str(p)])


def test_dataclass_defaults_are_independent():
    a, b = ServerConfig(), ServerConfig()
    a.listen_client_urls.append("http://x:1")
    assert b.listen_client_urls == ["http://localhost:2379"]


def test_listen_urls_alone_set_advertised_urls_and_initial_cluster():
    cfg = parse_args(["--listen-peer-urls", "http://127.0.0.1:9", "--listen-client-urls", "http://127.0.0.1:8"])
    assert cfg.initial_advertise_peer_urls == ["http://127.0.0.1:9"]
    assert cfg.advertise_client_urls == ["http://127.0.0.1:8"]
    assert cfg.initial_cluster == "default=http://127.0.0.1:9"
