"""What every endpoint shares (settings, the UI's backend and its engine, the state database, keys,
generation slots), and the FastAPI dependencies that authenticate a request for a scope."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request

from .keys import KeyStore
from .security import Caller, GenerationSlots, authenticate


@dataclass
class Service:
    settings: object
    backend: object          # ui.backend.Backend: collections, ingest jobs, and the Engine
    keys: KeyStore           # over the state database
    slots: GenerationSlots

    @property
    def engine(self):
        return self.backend.engine

    @property
    def state(self):
        """rag.state.State: users, rights on collections, keys, the audit log."""
        return self.keys.state


# async on purpose: the guard middleware already found the caller (a state query, in a worker thread), so these
# only check its scope; FastAPI would run sync ones in a thread
async def service(request: Request) -> Service:
    return request.app.state.service


async def read_key(request: Request, svc: Service = Depends(service)) -> Caller:
    return authenticate(request, svc.keys, "read")


async def admin_key(request: Request, svc: Service = Depends(service)) -> Caller:
    return authenticate(request, svc.keys, "admin")


__all__ = ["Service", "service", "read_key", "admin_key"]
