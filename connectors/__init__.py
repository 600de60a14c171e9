"""Vendor connectors: one module per vendor, registered here by name."""

from __future__ import annotations

import importlib

from volley.connector import Connector

__all__ = ["available", "connector_class"]

_REGISTRY = {
    "responsys": "connectors.responsys:ResponsysConnector",
    "medchat": "connectors.medchat:MedChatConnector",
    "relay": "connectors.relay:RelayConnector",
    "sprinklr": "connectors.sprinklr:SprinklrConnector",
    "intilery": "connectors.intilery:IntileryConnector",
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def connector_class(vendor: str) -> type[Connector]:
    module_name, class_name = _REGISTRY[vendor].split(":")
    cls: type[Connector] = getattr(importlib.import_module(module_name), class_name)
    return cls
