"""Realistic event batches like the seed's: email or phone, 2-3 products, 2-4 custom fields."""

from __future__ import annotations

import json
import random
from typing import Any

ACTIONS = ("search", "view", "clicked", "add_to_cart", "purchase")


def realistic_event(rng: random.Random, people: int = 10_000) -> dict[str, Any]:
    person = rng.randrange(people)
    event: dict[str, Any] = {"action": rng.choice(ACTIONS), "locale": rng.choice(("bg", "en"))}
    if rng.random() < 0.6:
        event["email"] = f"customer{person}@shop.example"
    else:
        event["phoneNumber"] = f"+3598{person:08d}"
    event["products"] = [
        {
            "id": str(rng.randrange(100_000)),
            "custom": {"string": [{"key": "color", "values": [rng.choice(("black", "red"))]}]},
        }
        for _ in range(rng.randint(2, 3))
    ]
    strings = [
        {"key": "agent", "values": ["web"]},
        {"key": "name", "values": ["I. Z."]},
        {"key": "imageURL", "values": [f"https://cdn.shop.example/img/{person}.jpg"]},
    ]
    event["custom"] = {
        "string": strings[: rng.randint(1, 3)],
        "numeric": [{"key": "price", "values": [round(rng.uniform(1, 500), 2)]}],
    }
    return event


def batch_body(size: int, seed: int = 1) -> bytes:
    """A JSON request body with ``size`` realistic events."""
    rng = random.Random(seed)
    return json.dumps({"events": [realistic_event(rng) for _ in range(size)]}).encode()
