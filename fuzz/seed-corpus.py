#!/usr/bin/env python3
"""Seeds the fuzz corpora from the shared cases and the demo requests.

Each case's `input` items become one seed: objects as compact JSON lines,
strings (garbage lines, pretty-printed requests) as they are; `sleep_ms`
directives are left out. A pretty-printed variant of every case and
examples/demo.jsonl (whole and line by line) are added. Byte-level targets
read a 4-byte header before the input (see HEADER_BYTES in fuzz/src/lib.rs),
so each seed is written with a header that pushes it in small pieces; the
framing target also gets one with a small message-size limit.

node_structured reads its input as an `arbitrary` plan, not as JSON, so it
gets no seeds: libFuzzer grows its corpus from nothing.

Usage: fuzz/seed-corpus.py [--cases DIR]   (from anywhere; writes fuzz/corpus/)
"""

import argparse
import hashlib
import json
import pathlib

FUZZ_DIR = pathlib.Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
DEFAULT_CASES = pathlib.Path("/work/shared/cases")

# Header seeds (little-endian u32). Bit 31 set: the framing target uses a
# small size limit taken from bits 16..24.
PLAIN_HEADER = (0).to_bytes(4, "little")
SMALL_LIMIT_HEADER = (0x8040_0001).to_bytes(4, "little")


def case_inputs(cases_dir):
    """Yields (name, input bytes) for every case and its pretty variant."""
    for path in sorted(cases_dir.glob("*.json")):
        items = [
            item
            for item in json.loads(path.read_text())["input"]
            if not (isinstance(item, dict) and set(item) == {"sleep_ms"})
        ]

        def render(item, indent):
            if isinstance(item, str):
                return item
            return json.dumps(item, indent=indent, separators=None if indent else (",", ":"))

        yield path.stem, "".join(render(item, None) + "\n" for item in items).encode()
        yield path.stem + "-pretty", "".join(render(item, 2) + "\n" for item in items).encode()


def demo_inputs():
    demo = (REPO / "examples" / "demo.jsonl").read_bytes()
    yield "demo", demo
    for number, line in enumerate(demo.splitlines(keepends=True), start=1):
        yield f"demo-line-{number}", line


def write(corpus, data):
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=pathlib.Path, default=DEFAULT_CASES)
    args = parser.parse_args()
    inputs = list(case_inputs(args.cases)) + list(demo_inputs())
    for _, data in inputs:
        write(FUZZ_DIR / "corpus" / "node", PLAIN_HEADER + data)
        write(FUZZ_DIR / "corpus" / "framing", PLAIN_HEADER + data)
        write(FUZZ_DIR / "corpus" / "framing", SMALL_LIMIT_HEADER + data)
    print(f"seeded fuzz/corpus/{{node,framing}} from {len(inputs)} inputs")


if __name__ == "__main__":
    main()
