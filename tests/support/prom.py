"""Reading Prometheus text in tests: every sample by name and labels."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; KeyError naming what is there when it is missing."""
    found = samples(text)
    key = (name, frozenset(labels.items()))
    if key not in found:
        near = sorted(str(dict(k[1])) for k in found if k[0] == name)
        raise KeyError(f"no sample {name}{labels}; {name} has {near}")
    return found[key]


def family_names(text: str) -> set[str]:
    """Every metric family name and every sample name in an exposition."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


async def scrape(client: Any, headers: dict[str, str]) -> str:
    """GET /metrics through an aiohttp test client."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    text: str = await resp.text()
    return text
