from utils.registry import Registry

NETWORKS = Registry('network')
