"""Where the tables' roots and the fail-safe ports live: table_roots' one mapped element (this
build's program), or the per-entry array maps of an older build's pins (src_roots, list_roots,
host_regions, failsafe), which this build still writes while that program runs. A reload copies the older maps into table_roots
(adopt_legacy) before any packet reaches the new program."""

from __future__ import annotations

import array
import ctypes as ct
from collections.abc import Mapping

from engine.kernel.abi import (
    FAILSAFE_MAX_ENTRIES,
    LISTS_PER_GEN,
    MAP_FAILSAFE,
    MAP_HOST_REGIONS,
    MAP_LIST_ROOTS,
    MAP_ROOTS,
    MAP_SRC_ROOTS,
    SRC_ROOTS_ENTRIES,
    HostRegion,
    ListRoots,
    RootImage,
)
from engine.kernel.bpfsys import Map
from engine.kernel.failsafe import FailsafePorts
from engine.kernel.hostplan import BUCKET_BYTES, BUCKET_MAP, BUCKETS_PER_GEN
from engine.kernel.mapped import MappedArray, MappedBytes

SRC_BYTES = SRC_ROOTS_ENTRIES * 8  # a u32 root in the low half of each u64 word
LIST_BYTES = ct.sizeof(ListRoots)
REGION_BYTES = ct.sizeof(HostRegion)
LISTS_OFF = RootImage.lists.offset
REGIONS_OFF = RootImage.regions.offset
FAILSAFE_OFF = RootImage.failsafe.offset
# by space: where its cuckoo buckets start in the image, and their bytes (both generations)
BUCKETS_OFF = {space: getattr(RootImage, BUCKET_MAP[space]).offset for space in BUCKET_MAP}
BUCKETS_SIZE = {space: 2 * BUCKETS_PER_GEN[space] * BUCKET_BYTES[space] for space in BUCKET_MAP}


class Roots:
    """The roots of one firewall's maps, mapped on first use until close()."""

    def __init__(self, maps: Mapping[str, Map]) -> None:
        self._maps = maps
        self._image: MappedBytes | None = None
        self._words: memoryview | None = None
        self._legacy_words: MappedArray | None = None
        self._failsafe: FailsafePorts | None = None
        self._failsafe_words: memoryview | None = None
        self._legacy_buckets: dict[int, MappedBytes] = {}  # an older build's host4 / host6

    def close(self) -> None:
        for buckets in self._legacy_buckets.values():
            buckets.close()
        self._legacy_buckets.clear()
        if self._failsafe is not None:
            self._failsafe.close()
            self._failsafe = None
        if self._failsafe_words is not None:
            self._failsafe_words.release()  # a view of the image's mapping, as words is
            self._failsafe_words = None
        if self._words is not None and self._image is not None:
            self._words.release()  # a view of the image's mapping: released before it
        self._words = None
        if self._image is not None:
            self._image.close()
        if self._legacy_words is not None:
            self._legacy_words.close()
        self._image = self._legacy_words = None

    def _mapped_image(self) -> MappedBytes | None:
        if self._image is None and MAP_ROOTS in self._maps:
            self._image = MappedBytes(self._maps[MAP_ROOTS], 1, ct.sizeof(RootImage))
        return self._image

    def words(self) -> memoryview:
        """The source roots, one u64 word per root index (its u32 in the low half)."""
        if self._words is None:
            image = self._mapped_image()
            if image is not None:
                self._words = image.raw[:SRC_BYTES].cast("Q")
            else:
                self._legacy_words = MappedArray(self._maps[MAP_SRC_ROOTS], SRC_ROOTS_ENTRIES)
                self._words = self._legacy_words.words
        return self._words

    def failsafe(self) -> FailsafePorts:
        """The fail-safe ports: a region of the image, or an older build's failsafe map."""
        if self._failsafe is None:
            image = self._mapped_image()
            if image is None:
                self._failsafe = FailsafePorts(self._maps[MAP_FAILSAFE])
            else:
                end = FAILSAFE_OFF + FAILSAFE_MAX_ENTRIES * 8
                self._failsafe_words = image.raw[FAILSAFE_OFF:end].cast("Q")
                self._failsafe = FailsafePorts(None, self._failsafe_words)
        return self._failsafe

    def has_buckets(self) -> bool:
        """Whether the loaded program probes cuckoo buckets (an old build has the hash alone)."""
        if MAP_ROOTS in self._maps:
            return True
        return MAP_HOST_REGIONS in self._maps and all(m in self._maps for m in BUCKET_MAP.values())

    def buckets(self, space: int) -> memoryview:
        """The cuckoo buckets of a space (both generations), as bytes: a bucket at its absolute
        index times its size. A slice of the image (the caller keeps no view past close()), or
        an older build's host4 / host6 mapped."""
        image = self._mapped_image()
        if image is not None:
            return image.raw[BUCKETS_OFF[space] : BUCKETS_OFF[space] + BUCKETS_SIZE[space]]
        if space not in self._legacy_buckets:
            self._legacy_buckets[space] = MappedBytes(
                self._maps[BUCKET_MAP[space]], 2 * BUCKETS_PER_GEN[space], BUCKET_BYTES[space]
            )
        return self._legacy_buckets[space].raw

    def write_lists(self, rows: Mapping[int, tuple[int, ...]], gen: int) -> None:
        """The root rows of the given list ids in gen's half."""
        if not rows:
            return
        ids = sorted(rows)
        image = self._mapped_image()
        if image is None:
            idx = array.array("I", (gen * LISTS_PER_GEN + i for i in ids))
            vals = array.array("I", (e for i in ids for e in rows[i]))
            self._maps[MAP_LIST_ROOTS].update_batch(idx.tobytes(), vals.tobytes())
            return
        for i in ids:
            at = LISTS_OFF + (gen * LISTS_PER_GEN + i) * LIST_BYTES
            image.raw[at : at + LIST_BYTES] = array.array("I", rows[i]).tobytes()

    def has_regions(self) -> bool:
        return MAP_ROOTS in self._maps or MAP_HOST_REGIONS in self._maps

    def region(self, index: int) -> bytes | None:
        """The packed host region at root index (engine.kernel.hostplan HOST_REGION)."""
        image = self._mapped_image()
        if image is None:
            return self._maps[MAP_HOST_REGIONS].lookup(index.to_bytes(4, "little"))
        at = REGIONS_OFF + index * REGION_BYTES
        return image.raw[at : at + REGION_BYTES].tobytes()

    def write_regions(self, regions: Mapping[int, bytes]) -> None:
        """Packed host regions by root index."""
        if not regions:
            return
        image = self._mapped_image()
        if image is None:
            ordered = sorted(regions)
            keys = array.array("I", ordered).tobytes()
            self._maps[MAP_HOST_REGIONS].update_batch(keys, b"".join(regions[i] for i in ordered))
            return
        for index, raw in regions.items():
            at = REGIONS_OFF + index * REGION_BYTES
            image.raw[at : at + REGION_BYTES] = raw

    def adopt_legacy(self) -> None:
        """Copy what an older build wrote into its per-entry maps into table_roots, which this
        load has just created empty: the rows, regions, buckets and fail-safe ports first, the
        source roots (which make the rest reachable) last. Later writes go to table_roots alone."""
        image = self._mapped_image()
        if image is None:
            return
        for name, offset, size in (
            (MAP_LIST_ROOTS, LISTS_OFF, LIST_BYTES),
            (MAP_HOST_REGIONS, REGIONS_OFF, REGION_BYTES),
        ):
            legacy = self._maps.get(name)
            if legacy is not None:
                _copy_array(legacy, image.raw[offset:], size)
        for space, name in BUCKET_MAP.items():
            if name in self._maps:
                older = MappedBytes(
                    self._maps[name], 2 * BUCKETS_PER_GEN[space], BUCKET_BYTES[space]
                )
                try:
                    at = BUCKETS_OFF[space]
                    image.raw[at : at + BUCKETS_SIZE[space]] = older.raw[: BUCKETS_SIZE[space]]
                finally:
                    older.close()
        if MAP_FAILSAFE in self._maps:
            legacy_ports = FailsafePorts(self._maps[MAP_FAILSAFE])
            try:
                self.failsafe().write(legacy_ports.masks())
            finally:
                legacy_ports.close()
        if MAP_SRC_ROOTS in self._maps:
            words = MappedArray(self._maps[MAP_SRC_ROOTS], SRC_ROOTS_ENTRIES)
            try:
                with words.words.cast("B") as raw:
                    image.raw[:SRC_BYTES] = raw[:SRC_BYTES]
            finally:
                words.close()


def _copy_array(legacy: Map, into: memoryview, size: int) -> None:
    """An array map's values into consecutive slots of size bytes, by their keys."""
    keys, values, count = legacy.items()
    index = array.array("I", keys[: count * 4])
    if list(index) == list(range(count)):  # an array's batch read: every index, in order
        into[: count * size] = values[: count * size]
        return
    for i, at in enumerate(index):
        into[at * size : (at + 1) * size] = values[i * size : (i + 1) * size]
