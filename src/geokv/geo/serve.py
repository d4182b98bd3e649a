"""``python -m geokv.geo.serve``: the geokv server with the geo service attached.

Same flags as ``python -m geokv.runtime.serve``. It runs the runtime's server with a
Member whose start/stop also start/stop ``GeoService`` (leader placement by
``--leader-preference``, biased election timeouts). When the runtime's serve.py attaches
the geo service itself (``attach_geo``), both entry points behave the same; attaching
twice is a no-op.
"""

from __future__ import annotations

import sys
from typing import Any

from .service import GeoService


def attach_geo(member: Any, cfg: Any) -> GeoService:
    """Create and install the geo service on ``member`` (before ``member.start()``)."""
    geo = getattr(member, "geo", None)
    if geo is None:
        geo = GeoService(member, cfg)
        geo.install()
        member.geo = geo
    return geo


def _geo_member_class(base: type) -> type:
    class GeoMember(base):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            geo = attach_geo(self, self.config)
            await super().start()
            geo.start()

        async def stop(self) -> None:
            geo = getattr(self, "geo", None)
            if geo is not None:
                await geo.stop()
            await super().stop()

    GeoMember.__name__ = base.__name__
    return GeoMember


def main(argv: list[str] | None = None) -> int:
    import geokv.runtime.member as runtime_member

    if not getattr(runtime_member.Member, "_geo_attached", False):
        cls = _geo_member_class(runtime_member.Member)
        cls._geo_attached = True
        runtime_member.Member = cls
    from geokv.runtime.serve import main as serve_main

    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
