"""Profiles of the generator's clients, derived from each client's id and segment.

Every attribute is a deterministic draw from a hash of ``<attribute>:<client_id>`` (BLAKE2b,
not Python's salted ``hash``), so the same generator seed gives the same profiles in every
process. The distributions are plausible for a Chinese retail bank:

- **value tier** by segment: ultra-high-net-worth clients are private or diamond, executives
  and wealthy white-collar clients mostly platinum or above, business owners gold to diamond,
  the rest mostly mass or gold (``TIER_WEIGHTS``);
- **RM**: every platinum, diamond and private client has one, and so do gold clients of the
  wealth and business segments; ids ``RM0001`` .. ``RM0400``;
- **preferred channel** by segment (``CHANNEL_WEIGHTS``; ``""`` = no preference), ``rm_task``
  only for clients with an RM;
- **time zone**: ``Asia/Shanghai`` for most, a few per cent abroad (more among the wealthy);
- **do not contact**: 2 % of clients (4 % of seniors).
"""

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from ato.generator import GeneratedTraffic
from policy.profiles import DEFAULT_TZ, Profile

TIER_WEIGHTS: dict[str, dict[str, int]] = {
    "ultra_high_net_worth": {"private": 70, "diamond": 30},
    "executive": {"platinum": 40, "diamond": 40, "private": 20},
    "wealth_white_collar": {"gold": 35, "platinum": 45, "diamond": 20},
    "small_business_owner": {"gold": 40, "platinum": 40, "diamond": 20},
    "car_owner": {"mass": 50, "gold": 40, "platinum": 10},
    "senior": {"mass": 50, "gold": 40, "platinum": 10},
    "savvy_regular": {"mass": 70, "gold": 25, "platinum": 5},
    "young_trendsetter": {"mass": 80, "gold": 20},
}
RM_TIERS = ("platinum", "diamond", "private")
RM_GOLD_SEGMENTS = ("wealth_white_collar", "small_business_owner")
RM_POOL = 400
CHANNEL_WEIGHTS: dict[str, dict[str, int]] = {
    "ultra_high_net_worth": {"rm_task": 60, "phone": 25, "video": 10, "": 5},
    "executive": {"rm_task": 40, "phone": 20, "chat": 20, "": 20},
    "wealth_white_collar": {"chat": 30, "push": 20, "phone": 20, "rm_task": 10, "": 20},
    "small_business_owner": {"phone": 35, "chat": 25, "rm_task": 10, "": 30},
    "car_owner": {"push": 40, "chat": 20, "": 40},
    "senior": {"phone": 50, "voice_bot": 10, "push": 5, "": 35},
    "savvy_regular": {"push": 40, "chat": 30, "": 30},
    "young_trendsetter": {"chat": 45, "push": 40, "": 15},
}
ABROAD_ZONES = (
    "Asia/Hong_Kong",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
)
ABROAD_SHARE = {"ultra_high_net_worth": 0.15, "executive": 0.10, "young_trendsetter": 0.05}
ABROAD_DEFAULT = 0.02
DNC_SHARE = {"senior": 0.04}
DNC_DEFAULT = 0.02


def _unit(client_id: str, attribute: str) -> float:
    """A uniform draw in [0, 1) fixed by the client id and the attribute."""
    digest = hashlib.blake2b(f"{attribute}:{client_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _pick(weights: dict[str, int], u: float) -> str:
    """The key whose cumulative weight share first exceeds ``u``."""
    total = sum(weights.values())
    edge = 0.0
    for key, weight in weights.items():
        edge += weight / total
        if u < edge:
            return key
    return list(weights)[-1]  # u rounding past the last edge


def _choice(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def generated_profile(client_id: str, segment: str) -> Profile:
    """The profile of one generated client (see the module docstring)."""
    tier = _pick(TIER_WEIGHTS[segment], _unit(client_id, "tier"))
    has_rm = tier in RM_TIERS or (tier == "gold" and segment in RM_GOLD_SEGMENTS)
    rm_id = f"RM{1 + int(_unit(client_id, 'rm') * RM_POOL):04d}" if has_rm else ""
    channels = CHANNEL_WEIGHTS[segment]
    if not has_rm:
        channels = {k: v for k, v in channels.items() if k != "rm_task"}
    abroad = _unit(client_id, "abroad") < ABROAD_SHARE.get(segment, ABROAD_DEFAULT)
    return Profile(
        client_id=client_id,
        segment=segment,
        value_tier=tier,
        rm_id=rm_id,
        preferred_channel=_pick(channels, _unit(client_id, "channel")),
        tz=_choice(ABROAD_ZONES, _unit(client_id, "zone")) if abroad else DEFAULT_TZ,
        do_not_contact=_unit(client_id, "dnc") < DNC_SHARE.get(segment, DNC_DEFAULT),
    )


def generated_profiles(traffic: GeneratedTraffic) -> list[Profile]:
    """Profiles of every client of ``traffic``, in the generator's client order."""
    return [generated_profile(cid, segment) for cid, segment in traffic.clients.items()]


def write_profiles_jsonl(profiles: Iterable[Profile], path: Path | str) -> int:
    """Write ``profiles`` as JSON lines that ``ato profiles load`` reads; return the count."""
    count = 0
    with Path(path).open("wb") as handle:
        for profile in profiles:
            row: dict[str, object] = {"client_id": profile.client_id, **profile.to_fields()}
            row["do_not_contact"] = profile.do_not_contact  # a JSON boolean, not "1"/"0"
            handle.write(orjson.dumps(row) + b"\n")
            count += 1
    return count
