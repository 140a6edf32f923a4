"""What every endpoint shares (settings, the UI's backend and its engine, keys, generation slots), and the
FastAPI dependencies that authenticate a request for a scope."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request

from .keys import ApiKey, KeyStore
from .security import GenerationSlots, authenticate


@dataclass
class Service:
    settings: object
    backend: object          # ui.backend.Backend: collections, ingest jobs, and the Engine
    keys: KeyStore
    slots: GenerationSlots

    @property
    def engine(self):
        return self.backend.engine


# async on purpose: they do not block (a stat and a dict lookup), and FastAPI would run sync ones in a thread
async def service(request: Request) -> Service:
    return request.app.state.service


async def read_key(request: Request, svc: Service = Depends(service)) -> ApiKey:
    return authenticate(request, svc.keys, "read")


async def admin_key(request: Request, svc: Service = Depends(service)) -> ApiKey:
    return authenticate(request, svc.keys, "admin")


__all__ = ["Service", "service", "read_key", "admin_key"]
