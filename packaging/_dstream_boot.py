# -*- coding: utf-8 -*-
"""dstream.pyz's first step, run by its __main__ before shiv unpacks anything.

It refuses, in one line and with exit 1, an interpreter or platform that the
zipapp holds no extension modules for (otherwise the user meets an ImportError
deep in a dependency), then lets bytecode for this interpreter be cached in
shiv's unpacked copy. Written for old interpreters too: no f-strings, no
annotations (type comments instead), so that Python 3.6 or 2.7 reach the message instead of a
SyntaxError.
"""

import os
import sys

PYTHONS = ((3, 10), (3, 14))  # oldest and newest supported minor version
MACHINES = ("x86_64", "aarch64")
GLIBC = (2, 17)  # manylinux2014
SUPPORTED = "CPython 3.10-3.14 on Linux x86_64/aarch64 (glibc 2.17 or newer)"


def glibc():
    # type: () -> tuple[int, ...] | None
    """glibc's version as a tuple, or None (musl, not Linux)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""  # 'glibc 2.36'
    except (AttributeError, ValueError, OSError):
        return None
    try:
        return tuple(int(part) for part in text.split()[1].split(".")[:2])
    except (AttributeError, IndexError, ValueError):
        return None


def refusal():
    # type: () -> str | None
    """The one-line reason this interpreter or platform cannot run dstream.pyz, or None."""
    implementation = getattr(getattr(sys, "implementation", None), "name", "python")
    version = sys.version_info[:2]
    machine = os.uname()[4] if hasattr(os, "uname") else "unknown"
    libc = glibc()
    this = "%s %s on %s %s" % ({"cpython": "CPython", "pypy": "PyPy"}.get(implementation, implementation),
                               sys.version.split()[0], sys.platform, machine)
    if implementation != "cpython":
        hint = "run it with CPython's python3"
    elif version < PYTHONS[0]:
        hint = "install python3.10 or newer"
    elif version > PYTHONS[1]:
        hint = "run it with python3.14 or an older python3"
    elif not sys.platform.startswith("linux") or machine not in MACHINES:
        hint = "run it on Linux x86_64 or aarch64"
    elif libc is None or libc < GLIBC:
        this += " with %s" % ("glibc %d.%d" % libc if libc else "a C library other than glibc")
        hint = "run it on a glibc 2.17+ distribution"
    else:
        return None
    return "Error: dstream.pyz runs on %s; this is %s (%s)" % (SUPPORTED, this, hint)


def check():
    # type: () -> None
    reason = refusal()
    if reason:
        sys.stderr.write(reason + "\n")
        sys.exit(1)
    # shiv compiles the unpacked copy with the interpreter that unpacked it; any other
    # interpreter compiles what it imports on first use, and keeps it there even where
    # PYTHONDONTWRITEBYTECODE is set (the copy is dstream's own cache).
    sys.dont_write_bytecode = False
