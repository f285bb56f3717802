#!/usr/bin/env python3
"""The architecture rules of docs/architecture.md, checked (run by scripts/test.sh):

1. no import cycle between the library's top-level modules (src/<module>);
2. no source file over 650 lines (library and command line);
3. no process::exit (nor std::process::abort) in the library: only the command line decides how
   the process ends;
4. no command module of the command line imports another command module;
5. the transport prefixes (docker://, oci-archive:, docker-archive:, containers-storage:) are
   spelled in at most three library files.

Prints one line per violation and exits 1 if there is any.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LIB = os.path.join(ROOT, "src")
CLI = os.path.join(ROOT, "cli", "src")
MAX_LINES = 650
COMMANDS = {
    "bound_images", "build_chunked", "cmd", "copy_to_storage", "export", "image", "list", "pull",
    "pull_from_default_storage", "set_unified", "storage",
}
PREFIXES = ["docker://", "oci-archive:", "docker-archive:", "containers-storage:"]
MAX_PREFIX_FILES = 3


def rust_files(top):
    for d, _, files in os.walk(top):
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def code_of(path):
    """The file without comments and without its #[cfg(test)] module (tests may spell anything)."""
    text = open(path, encoding="utf-8").read()
    # Comment lines (`//`, `///`, `//!`) and trailing ` // …` comments; not `//` inside strings.
    text = re.sub(r"(?m)^\s*//[^\n]*", "", text)
    text = re.sub(r"(?m)\s+//\s[^\n\"]*$", "", text)
    cut = text.find("#[cfg(test)]\nmod tests")
    return text if cut < 0 else text[:cut]


def top_module(path):
    rel = os.path.relpath(path, LIB)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


problems = []

# 1. Module graph of the library.
edges = {}
for p in rust_files(LIB):
    m = top_module(p)
    # Test-only modules (`unit_tests.rs`, `#[cfg(test)]`) may use anything.
    if m in ("lib", "main") or p.endswith("tests.rs"):
        continue
    for dep in set(re.findall(r"\bcrate::([a-z_]+)", code_of(p))):
        if dep != m and os.path.exists(os.path.join(LIB, dep)) or os.path.exists(os.path.join(LIB, dep + ".rs")):
            if dep != m:
                edges.setdefault(m, set()).add(dep)

state = {}
stack = []


def visit(n):
    state[n] = 1
    stack.append(n)
    for d in sorted(edges.get(n, ())):
        if state.get(d) == 1:
            cycle = stack[stack.index(d):] + [d]
            problems.append("import cycle: " + " -> ".join(cycle))
        elif d not in state:
            visit(d)
    stack.pop()
    state[n] = 2


for n in sorted(edges):
    if n not in state:
        visit(n)

# 2. File sizes.
for top in (LIB, CLI):
    for p in rust_files(top):
        n = sum(1 for _ in open(p, encoding="utf-8"))
        if n > MAX_LINES:
            problems.append(f"{os.path.relpath(p, ROOT)}: {n} lines, more than {MAX_LINES}")

# 3. No process::exit in the library.
for p in rust_files(LIB):
    if re.search(r"process::(exit|abort)\s*\(", code_of(p)):
        problems.append(f"{os.path.relpath(p, ROOT)}: process::exit in the library")

# 4. Command modules import no other command module.
for p in rust_files(CLI):
    me = os.path.basename(p)[:-3]
    if me not in COMMANDS:
        continue
    for other in COMMANDS - {me}:
        if re.search(rf"\b(super|crate)::{other}\b", code_of(p)):
            problems.append(f"{os.path.relpath(p, ROOT)}: the {me} command imports the {other} command")

# 5. Transport prefixes in at most three library files.
spelled = sorted(
    os.path.relpath(p, ROOT)
    for p in rust_files(LIB)
    if any(f'"{x}' in code_of(p) for x in PREFIXES)
)
if len(spelled) > MAX_PREFIX_FILES:
    problems.append(
        f"transport prefixes spelled in {len(spelled)} library files (at most {MAX_PREFIX_FILES}): "
        + ", ".join(spelled)
    )

for line in problems:
    print(f"architecture: {line}")
print(f"architecture: {len(problems)} problems")
sys.exit(1 if problems else 0)
