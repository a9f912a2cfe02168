"""The one-entry config map: active generation, mode, event rate and generation number."""

from __future__ import annotations

import ctypes as ct
import struct

from engine.kernel.abi import Config
from engine.kernel.bpfsys import Map

_KEY = struct.Struct("<I").pack(0)


class ConfigMap:
    def __init__(self, m: Map) -> None:
        self._map = m

    def read(self) -> Config:
        raw = self._map.lookup(_KEY)
        return Config.from_buffer_copy(raw or bytes(ct.sizeof(Config)))

    def write(self, **fields: int) -> Config:
        """Change the named fields, keeping the others; returns the config written."""
        cfg = self.read()
        for name, value in fields.items():
            setattr(cfg, name, value)
        # one array update: the program reads active_gen once per packet
        self._map.update(_KEY, bytes(cfg))
        return cfg
