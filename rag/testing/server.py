"""An ASGI app served by uvicorn on a free loopback port, in a thread (tests and benchmarks)."""
from __future__ import annotations

import threading
import time


class ServerThread:
    """``with ServerThread(app) as srv: httpx.get(srv.url + "/healthz")``; stops on exit."""

    def __init__(self, app, host: str = "127.0.0.1"):
        import uvicorn

        # proxy_headers=False, as `serve` runs it: the app alone decides which proxies' headers to believe
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False,
                                                    proxy_headers=False))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


__all__ = ["ServerThread"]
