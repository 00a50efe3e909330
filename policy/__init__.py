"""Contact policy: client profiles, routing, quiet hours, caps and cooldowns (docs/policy.md)."""

from policy.caps import CapStore
from policy.exceptions import PolicyError, ProfileError, ProfileFileError
from policy.profile_files import load_profiles_file, read_profiles
from policy.profiles import Profile, ProfileStore
from policy.routing import Route, route
from policy.rules import Candidate, Decision, Usage, client_resumed, decide, precheck
from policy.settings import Policy, check_names, load_policy, parse_policy

__all__ = [
    "CapStore",
    "Candidate",
    "Decision",
    "Policy",
    "PolicyError",
    "Profile",
    "ProfileError",
    "ProfileFileError",
    "ProfileStore",
    "Route",
    "Usage",
    "check_names",
    "client_resumed",
    "decide",
    "load_policy",
    "load_profiles_file",
    "parse_policy",
    "precheck",
    "read_profiles",
    "route",
]
