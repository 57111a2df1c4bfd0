"""Local MongoDB wire-protocol server (mongoeco) for the zero-config stack and tests.

Runs in its own Python >= 3.13 environment, exactly as production runs a real MongoDB:
it imports nothing from voiceapp. Usage: python wire_server.py --port P [--sqlite PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def serve(host: str, port: int, sqlite_path: str | None) -> None:
    """Serve until SIGTERM/SIGINT; prints 'ready <uri>' once listening."""
    from mongoeco.wire import AsyncMongoEcoProxyServer

    if sqlite_path:
        from mongoeco.engines.sqlite import SQLiteEngine

        engine = SQLiteEngine(path=sqlite_path)
    else:
        from mongoeco.engines.memory import MemoryEngine

        engine = MemoryEngine()
    proxy = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port)
    address = await proxy.start()
    print(f"ready mongodb://{address.host}:{address.port}/?directConnection=true", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27018)
    parser.add_argument("--sqlite", help="persist to this SQLite file (default: in memory)")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 13):
        print("mongoeco needs Python >= 3.13", file=sys.stderr)
        return 2
    asyncio.run(serve(args.host, args.port, args.sqlite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
