"""Networks. ``build_network({'type': 'STDAN', **kwargs})`` builds any registered one; every one is a
``models.base.VideoNetwork`` (the interface every caller uses)."""
from . import baseline, msitf, mstt, starnet, stdan, temporal_liif  # noqa: F401  (explicit imports fill the registry)
from . import rstt  # noqa: F401
from . import tmnet  # noqa: F401
from . import zsm  # noqa: F401
from .registry import NETWORKS


def build_network(spec):
    return NETWORKS.build(spec)
