from utils.registry import Registry

DATASETS = Registry('dataset')
