"""The echo agent itself: the prompt from stdin into echo.txt, JSON Lines on stdout."""

import json
import sys
from pathlib import Path


def main() -> None:
    greeting = sys.argv[1]
    prompt = sys.stdin.read()
    Path("echo.txt").write_text(f"{greeting}: {prompt}\n")
    print(json.dumps({"kind": "said", "text": f"{greeting}: {prompt}"}), flush=True)
    print(json.dumps({"kind": "done", "tokens": len(prompt.split())}), flush=True)


if __name__ == "__main__":
    main()
