"""A registry is a dict plus a decorator; ``build({'type': Name, **kwargs})`` makes anything in it."""
import copy


class Registry(dict):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def register(self, name=None):
        def decorator(obj):
            key = name or obj.__name__
            if key in self:
                raise KeyError(f'{self.kind} {key!r} is registered twice')
            self[key] = obj
            obj.registered_name = key  # what tables and messages call it (MSTT, not its class MSTTr)
            return obj
        return decorator

    def build(self, spec, **extra):
        """Build from ``{'type': Name, **kwargs}``; ``spec`` is never modified."""
        if not isinstance(spec, dict) or 'type' not in spec:
            raise ValueError(f'a {self.kind} spec must be a mapping with a "type" key, got {spec!r}')
        kwargs = copy.deepcopy({k: v for k, v in spec.items() if k != 'type'})
        name = spec['type']
        if name not in self:
            raise KeyError(f'unknown {self.kind} type {name!r}; known: {", ".join(sorted(self))}')
        return self[name](**kwargs, **extra)
