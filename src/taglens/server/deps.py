"""What routes receive: the app's service, settings and library, as Annotated dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from taglens.server.catalog import Catalog
from taglens.server.service import Service
from taglens.server.settings import Settings


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_catalog(request: Request) -> Catalog:
    catalog = request.app.state.catalog
    if catalog is None:
        raise HTTPException(404, "this server has no library")
    return catalog


def room_in_queue(request: Request) -> None:
    """Refuse at once, before the body is read, when the image queue is already full."""
    request.app.state.service.check_room()


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
