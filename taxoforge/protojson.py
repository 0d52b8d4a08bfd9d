"""Protobuf messages as plain JSON-ready dicts (64-bit integers stay numbers)."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["to_dict"]


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    return value


def to_dict(message: Message, defaults: bool = False) -> dict[str, Any]:
    """Set fields only (every scalar field with ``defaults``), by their proto names; unlike
    MessageToDict, int64 are ints, not strings."""
    out: dict[str, Any] = {}
    if defaults:
        for each in message.DESCRIPTOR.fields:
            if each.type != FieldDescriptor.TYPE_MESSAGE and not each.is_repeated:
                out[each.name] = _value(cast(FieldDescriptor, each), getattr(message, each.name))
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out
