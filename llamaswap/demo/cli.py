"""The demo server's command line (``llamaswap-demo``, ``python -m llamaswap.demo``)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Iterable

from llamaswap.demo.server import DemoOptions, DemoServer


def non_negative_float(value: str) -> float:
    """argparse type: a float >= 0."""
    number = float(value)
    if number < 0 or math.isnan(number):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def non_negative_int(value: str) -> int:
    """argparse type: an int >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The demo's command line (``tests/upstream.py`` adds its own flags to it)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="A fake OpenAI-compatible model server (no GPU, no model files)."
    )
    parser.add_argument("--port", type=int, default=8080, help="listen port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--model", default="demo", help="model id reported in responses")
    parser.add_argument(
        "--startup-delay",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="simulated load time; /health answers 503 until it has passed",
    )
    parser.add_argument(
        "--token-delay",
        type=non_negative_float,
        default=0.02,
        metavar="SECONDS",
        help="delay between streamed tokens",
    )
    parser.add_argument("--reply", default=None, help="fixed reply text (default: echo)")
    parser.add_argument(
        "--max-tokens", type=non_negative_int, default=None, help="cap on reply tokens"
    )
    parser.add_argument("--quiet", action="store_true", help="no log lines on stdout")
    return parser


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    """Turn parsed arguments into :class:`DemoOptions`."""
    return DemoOptions(
        host=args.host,
        port=args.port,
        model=args.model,
        startup_delay=args.startup_delay,
        token_delay=args.token_delay,
        reply=args.reply,
        max_tokens=args.max_tokens,
        quiet=args.quiet,
    )


def run(server: DemoServer) -> int:
    """Run ``server`` until it is stopped; return the process exit status."""
    try:
        asyncio.run(server.serve())
    except OSError as exc:  # e.g. address already in use
        print(
            f"demo: cannot listen on {server.options.host}:{server.options.port}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt:
        pass
    if not server.options.quiet:
        print("demo: stopped", flush=True)
    return 0


def main(argv: Iterable[str] | None = None) -> None:
    """Console-script entry point (``llamaswap-demo``)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    sys.exit(run(DemoServer(options_from_args(args))))
