"""Networks. ``build_network({'type': 'STDAN', **kwargs})`` builds any registered one."""
from .registry import NETWORKS
from . import baseline, msitf, mstt, starnet, stdan, temporal_liif  # noqa: F401  (explicit imports fill the registry)


def build_network(spec):
    return NETWORKS.build(spec)
