"""The server process: ``python -m geokv.runtime.serve --name n1 ...`` (etcd's flags).

Startup: parse flags/config file, open LMDB and the WAL, start the Member (peer port),
then the etcd v3 gRPC server and the /health + /metrics HTTP server. When all are up it
logs ``geokv: ready`` (tests and the LocalCluster harness wait for it).
SIGTERM/SIGINT: stop accepting client requests, let in-flight ones finish for up to
``GRPC_GRACE_S``, stop the Raft driver after its current turn (the WAL is synced every
turn), close the WAL and LMDB, exit 0. A user mistake (bad flag, port in use, corrupt
WAL) prints one clear line and exits non-zero, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from geokv.runtime.config import ConfigError, ServerConfig, parse_args

log = logging.getLogger("geokv.serve")

GRPC_GRACE_S = 2.0
EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 1


class StartupError(Exception):
    """Something in the environment stops the server from starting (message for the user)."""


def _outbound_delay(cfg: ServerConfig):
    if not cfg.wan_emulation:
        return None
    try:
        from geokv.geo.wan import emulator_from_flags
    except ImportError:
        return None
    try:
        emu = emulator_from_flags(cfg.region, cfg.wan_emulation, cfg.rtt or None)
    except ValueError as exc:
        raise StartupError(f"--wan-emulation/--rtt: {exc}") from None
    return None if emu is None else emu.one_way_delay_s


def _attach_geo(member, cfg: ServerConfig):
    """The geo service (leader placement, biased election timeouts), if available."""
    if getattr(type(member), "_geo_attached", False):
        return None  # python -m geokv.geo.serve attached it already
    try:
        from geokv.geo.serve import attach_geo
    except ImportError:
        return None
    try:
        return attach_geo(member, cfg)
    except ValueError as exc:  # a bad --leader-preference and the like
        raise StartupError(str(exc)) from None


def _lock_data_dir(cfg: ServerConfig):
    """Hold an exclusive flock on <data-dir>/member/lock for the life of the process:
    two servers on one data dir would corrupt the WAL and LMDB."""
    import fcntl

    path = os.path.join(cfg.data_dir, "member")
    try:
        os.makedirs(path, exist_ok=True)
        f = open(os.path.join(path, "lock"), "a+")
    except OSError as exc:
        raise StartupError(f"cannot use data dir {cfg.data_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StartupError(f"data dir {cfg.data_dir} is in use by another geokv server") from None
    return f


async def run_server(cfg: ServerConfig, *, ready_line: bool = True) -> int:
    from geokv.runtime.member import Member

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    lock = _lock_data_dir(cfg)
    member = Member(cfg, outbound_delay_s=_outbound_delay(cfg))
    geo = _attach_geo(member, cfg)
    grpc_server = http_server = None
    try:
        try:
            os.makedirs(cfg.data_dir, exist_ok=True)
            await member.start()
            if geo is not None:
                geo.start()
        except OSError as exc:
            raise StartupError(f"cannot start member {cfg.name!r}: {exc.strerror or exc} "
                               f"(peer URL {cfg.listen_peer_urls[0]}, data dir {cfg.data_dir})") from None
        except Exception as exc:
            if type(exc).__name__ in ("WALCorrupt", "StorageCorrupt", "SnapshotCorrupt"):
                raise StartupError(f"the write-ahead log in {cfg.wal_dir} is corrupt: {exc}") from None
            raise
        try:
            from geokv.api.server import serve_grpc
        except ImportError:
            serve_grpc = None
            log.warning("geokv.api.server is not available: no client API")
        if serve_grpc is not None:
            try:
                grpc_server = await serve_grpc(member, cfg)
            except Exception as exc:
                if type(exc).__name__ == "ServeError":
                    raise StartupError(str(exc)) from None
                raise
        if cfg.listen_metrics_urls:
            try:
                from geokv.api.http import serve_http

                http_server = await serve_http(member, cfg)
            except OSError as exc:
                raise StartupError(f"cannot listen for metrics on {cfg.listen_metrics_urls}: {exc.strerror or exc}") from None
        if ready_line:
            log.warning("geokv: ready (name=%s id=%x cluster=%x client=%s peer=%s)", cfg.name, member.id,
                        member.cluster_id, ",".join(cfg.listen_client_urls), ",".join(cfg.listen_peer_urls))
        stopped = asyncio.ensure_future(member.exit_requested.wait())
        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stopped, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        stop_wait.cancel()
        if member.fatal is not None:
            log.error("geokv: fatal error in the Raft driver: %r", member.fatal)
            return EXIT_STARTUP_FAILED
        if member.removed:
            log.warning("geokv: this member was removed from the cluster; exiting")
        return 0
    finally:
        if geo is not None:
            try:
                await geo.stop()
            except Exception:  # advisory service; shutting down anyway
                pass
        if grpc_server is not None:
            try:
                await grpc_server.stop(GRPC_GRACE_S)
            except Exception:  # shutting down anyway
                pass
        if http_server is not None:
            try:
                await http_server.close()
            except Exception:
                pass
        await member.stop()
        log.info("geokv: stopped")


def _setup_logging(level: str) -> None:
    lvl = getattr(logging, str(level).upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"geokv: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(cfg.log_level)
    if os.environ.get("GEOKV_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    profile_out = os.environ.get("GEOKV_PROFILE_OUT")  # cProfile the whole server (benchmarks)
    prof = None
    if profile_out:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        return asyncio.run(run_server(cfg))
    except StartupError as exc:
        print(f"geokv: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    except KeyboardInterrupt:
        return 0
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(f"{profile_out}.{cfg.name}")


if __name__ == "__main__":
    sys.exit(main())
