"""The user-facing error table keeps etcd's codes and texts."""

from geokv import errors


def test_every_error_has_a_grpc_code_and_an_etcd_message():
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, errors.GeoKVError)]
    assert len(classes) > 30
    for cls in classes:
        err = cls()
        assert err.code.isupper() and err.code != "UNKNOWN" or cls is errors.GeoKVError
        assert str(err) == err.message


def test_compacted_is_out_of_range_with_etcds_text():
    err = errors.Compacted()
    assert err.code == "OUT_OF_RANGE"
    assert err.message == "etcdserver: mvcc: required revision has been compacted"
