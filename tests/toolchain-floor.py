"""Fail if any locked crate declares a rust-version newer than the floor.

monserv must build with Yocto's LTS Rust (1.94); reads `cargo metadata` JSON on stdin.
"""
import json
import sys

FLOOR = (1, 94)

packages = json.load(sys.stdin)["packages"]
newer = [
    f"{p['name']} {p['version']} (rust {p['rust_version']})"
    for p in packages
    if p.get("rust_version") and tuple(map(int, p["rust_version"].split(".")[:2])) > FLOOR
]
if newer:
    sys.exit("crates needing a Rust newer than %d.%d: %s" % (FLOOR + (", ".join(newer),)))
print("%d crates, none needs a Rust newer than %d.%d" % ((len(packages),) + FLOOR))
