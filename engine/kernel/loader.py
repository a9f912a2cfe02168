"""Compile bpf/infw.bpf.c with bcc and load its XDP function, keeping compiler and verifier
output for the error message."""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.checkout import BPF_DIR
from engine.errors import DatapathError, PrivilegeError
from engine.kernel import bpfsys
from engine.kernel.abi import MAP_NODES, MAP_ROOTS, NodeImage, RootImage, c_defines
from engine.kernel.pinroot import ensure_pin_root

BPF_SOURCE = BPF_DIR / "infw.bpf.c"
PROG_NAME = "infw_xdp"  # the kernel keeps the function name; it marks older builds as ours
VERIFIER_TAIL_LINES = 30


def cflags(pin_root: str, source_dir: str | Path = BPF_DIR) -> list[str]:
    """The flags bpf/ needs: its headers, where to pin, and every constant of
    engine.kernel.abi as a define (the C side has none of its own and refuses to compile
    without them). A kernel header defining one of the same names is an error, not a
    silent override."""
    # the source's own directory first, then bpf/ (a test compiles a changed copy elsewhere)
    includes = dict.fromkeys([f"-I{source_dir}", f"-I{BPF_DIR}"])
    return [*includes, f'-DPIN_ROOT="{pin_root}"', "-Werror=macro-redefined"] + [
        f"-D{name}={value:#x}U" for name, value in c_defines().items()
    ]


def headers_problem() -> str | None:
    """Why bcc cannot compile here (no kernel headers for the running kernel), or None."""
    release = platform.release()
    base = Path("/lib/modules") / release
    for sub in ("build", "source"):
        if (base / sub / "include" / "linux" / "kconfig.h").exists():
            return None
    return f"kernel headers for {release} not found under {base}/build or {base}/source"


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """bcc and libbpf print compiler errors and the verifier log on fd 2: keep them for the
    error message instead of spraying them over a console."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.seek(0)
            return tmp.read().decode(errors="replace")

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tail(text: str, lines: int = VERIFIER_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def compile_program(
    pin_root: str, source_path: str | Path = BPF_SOURCE, extra_cflags: Sequence[str] = ()
) -> Any:
    """Compile with bcc (creating or reusing the pinned maps); returns the bcc.BPF object."""
    try:
        from bcc import BPF
    except ImportError as exc:
        raise DatapathError(f"bcc is not importable ({exc})", bpfsys.INSTALL_HINT) from exc
    problem = headers_problem()
    if problem:
        raise DatapathError(
            problem,
            "run `make bootstrap` (it installs linux-headers-amd64 "
            "and links them for the running kernel)",
        )
    ensure_pin_root(pin_root)  # 0700, root's: nobody else may remove or swap the pins
    for name, size in IMAGES.items():
        ensure_image(pin_root, name, size)
    with _captured_stderr() as log:
        try:
            return BPF(
                src_file=str(source_path).encode(),
                cflags=[*cflags(pin_root, Path(source_path).parent), *extra_cflags],
            )
        except Exception as exc:  # bcc raises bare Exception for compile errors
            _raise_if_unprivileged(exc, log())
            raise DatapathError(
                f"bcc could not compile {source_path}: {exc}\n{_tail(log())}",
                "see the compiler output above",
            ) from exc


# The single-element maps the program walks by pointer arithmetic, and their element sizes.
IMAGES = {MAP_NODES: ct.sizeof(NodeImage), MAP_ROOTS: ct.sizeof(RootImage)}


def ensure_image(pin_root: str, name: str, size: int) -> None:
    """Create and pin one of the IMAGES (16 MiB each) before bcc compiles, so bcc opens the
    pin: declared with its real value type, trie_nodes took bcc minutes and gigabytes to
    compile. The source declares a small value; the verifier bounds the program's accesses
    by the map's real value size."""
    path = os.path.join(pin_root, name)
    if os.path.exists(path):
        return
    bpfsys.create_pinned_array(path, size, 1, bpfsys.BPF_F_MMAPABLE)


def _raise_if_unprivileged(exc: Exception, log: str) -> None:
    # bcc reports errno only as text: EPERM is "Operation not permitted" (the verifier's own
    # refusals are EACCES, "Permission denied", and are not a privilege problem)
    if os.geteuid() != 0 or "Operation not permitted" in f"{exc}{log}":
        raise PrivilegeError(
            f"not allowed to load BPF programs ({exc})", bpfsys.PRIVILEGE_HINT
        ) from exc


def load_function(bpf: Any, name: str = PROG_NAME, prog_type: str = "XDP") -> Any:
    """Load one function of a compiled program (bcc's load_func), the verifier log kept."""
    from bcc import BPF

    with _captured_stderr() as log:
        try:
            return bpf.load_func(name, getattr(BPF, prog_type))
        except Exception as exc:
            _raise_if_unprivileged(exc, log())
            raise DatapathError(
                f"the verifier rejected {name}: {exc}\n{_tail(log())}",
                "the last lines of the verifier log are shown above",
            ) from exc
