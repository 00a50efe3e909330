"""Events a shard holds until the watermark passes them."""

from ato.columns import EventColumns

MAX_PARTS = 64  # more parts left pending are merged into one (few, large parts loop fastest)
Part = tuple[EventColumns, int, int]  # events, their least and greatest ts


def _part(events: EventColumns) -> Part:
    return events, int(events.ts.min()), int(events.ts.max())


class PendingEvents:
    """Parts of event columns waiting for the watermark, each with its time range.

    :meth:`pop_ready` copies only the parts the watermark splits: a part wholly before it is
    handed on as it is, a part wholly at or after it stays as it is. (Events wait about the
    allowed lateness, many shard calls; re-copying everything pending at each call cost more
    than applying the events.)
    """

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def __len__(self) -> int:
        return sum(len(events) for events, _, _ in self.parts)

    def add(self, events: EventColumns) -> None:
        """Hold ``events`` (empty ones are ignored)."""
        if len(events):
            self.parts.append(_part(events))

    def all(self) -> EventColumns:
        """Every pending event, in arrival order (left pending)."""
        return EventColumns.concat([events for events, _, _ in self.parts])

    def pop_all(self) -> EventColumns:
        """Every pending event, in arrival order; none is left."""
        events = self.all()
        self.parts = []
        return events

    def pop_ready(self, watermark: int) -> EventColumns:
        """The events before ``watermark`` (arrival order); the rest stay pending."""
        ready: list[EventColumns] = []
        rest: list[Part] = []
        for part in self.parts:
            events, low, high = part
            if high < watermark:
                ready.append(events)
            elif low >= watermark:
                rest.append(part)
            else:
                is_ready = events.ts < watermark
                ready.append(events.take(is_ready))
                rest.append(_part(events.take(~is_ready)))
        if len(rest) > MAX_PARTS:
            rest = [_part(EventColumns.concat([events for events, _, _ in rest]))]
        self.parts = rest
        return EventColumns.concat(ready)


class LanedPending:
    """The pending events of each lane of a shard (see :class:`state.lanes.LanedStore`)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = [PendingEvents() for _ in range(lanes)]

    def __len__(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    def add(self, parts: list[EventColumns]) -> None:
        """Hold each lane's events (``parts[k]`` for lane k)."""
        for lane, events in zip(self.lanes, parts, strict=True):
            lane.add(events)

    def all(self) -> EventColumns:
        """Every pending event, lane by lane, in arrival order within a lane (left pending)."""
        return EventColumns.concat([lane.all() for lane in self.lanes])

    def pop(self, watermark: int, final: bool) -> list[EventColumns]:
        """Each lane's events the watermark passed (every one when ``final``), removed."""
        return [lane.pop_all() if final else lane.pop_ready(watermark) for lane in self.lanes]
