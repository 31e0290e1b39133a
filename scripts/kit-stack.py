#!/usr/bin/env python3
"""The Supabase kit's local stack: `python scripts/kit-stack.py --help` (docs/SUPABASE.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kit_stack.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
