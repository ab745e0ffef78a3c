"""Redis Streams work queues with consumer groups, carrying protobuf messages.

Delivery contract (docs/architecture.md, data flow; decision 3):
- An entry is acked only after its output is written downstream; `forward` does the downstream XADD, the
  idempotency record and the XACK in one Lua script, so a crash leaves either nothing or everything.
- A consumer first re-reads its own pending entries (a restarted worker with the same name replays what it
  had not acked), then takes over entries another consumer has held longer than the visibility timeout
  (XAUTOCLAIM: that consumer is presumed dead), then the entries of a consumer whose service registration has
  expired (it is dead for sure: a replacement pod with a new name need not wait out the visibility timeout),
  then reads new entries.
- Redelivery is harmless: `forward` writes downstream at most once per (run, stage, prompt_id).
- Entries every group has read and acked are trimmed by the controller (`trim_consumed`) once they are older
  than a retention period, so the streams do not grow with every run (docs/architecture.md, decision 31).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis
from google.protobuf.message import DecodeError, Message

from semirl.core import keys

log = logging.getLogger(__name__)

PAYLOAD_FIELD = b"pb"
VISIBILITY_TIMEOUT_ENV = "SEMIRL_VISIBILITY_TIMEOUT_S"
DEFAULT_VISIBILITY_TIMEOUT_S = 60.0
ORPHAN_CHECK_INTERVAL_S = 2.0  # how often a consumer looks for consumers whose registration is gone
ORPHAN_MIN_IDLE_MS = 1000  # an entry delivered this recently is left alone even so (a worker still starting)
M = TypeVar("M", bound=Message)

# KEYS: out_stream, done_set, in_stream   ARGV: group, entry_id, member, payload, maxlen
_FORWARD_ONCE = """
local added = redis.call('SADD', KEYS[2], ARGV[3])
if added == 1 then
  redis.call('XADD', KEYS[1], '*', 'pb', ARGV[4])
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return added
"""


@dataclass(frozen=True)
class Delivery(Generic[M]):
    entry_id: str
    message: M
    delivery_count: int = 1


class StreamQueue(Generic[M]):
    """One consumer of one stream's consumer group, decoding entries as `message_type`."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        message_type: type[M],
        *,
        visibility_timeout_s: float | None = None,
        reclaim: bool = True,
        owner_service: str | None = None,
    ) -> None:
        """`owner_service`: the consumers of this group are instances of that service, named as they register
        (core/registration.py); a consumer whose registration is gone is dead and its entries are taken over."""
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.message_type = message_type
        if visibility_timeout_s is None:
            visibility_timeout_s = float(os.environ.get(VISIBILITY_TIMEOUT_ENV, DEFAULT_VISIBILITY_TIMEOUT_S))
        self.visibility_timeout_ms = int(visibility_timeout_s * 1000)
        # A sole consumer that holds entries on purpose (the trainer, until its checkpoint) must not reclaim.
        self.reclaim_enabled = reclaim
        self.owner_service = owner_service
        self._next_orphan_check = 0.0
        self._replay_cursor: str | None = "0"  # next own-pending id to replay; None once replayed
        self._forward_script = client.register_script(_FORWARD_ONCE)
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    # --- producing ------------------------------------------------------------------------------------

    def publish(self, message: Message) -> str:
        return publish(self.client, self.stream, message)

    # --- consuming ------------------------------------------------------------------------------------

    def read(self, count: int = 16, block_ms: int = 1000) -> list[Delivery[M]]:
        """Own unacked entries first (once, after start), then reclaimed ones, then new ones."""
        if self._replay_cursor is not None:
            response = self._xreadgroup(self._replay_cursor, count, None)
            entries = response[0][1] if response else []
            if entries:
                last = entries[-1][0]
                self._replay_cursor = _text(last)
                own = self._decode(response)
                if own:
                    return own
            else:
                self._replay_cursor = None
        if self.reclaim_enabled:
            claimed = self.reclaim(count) or self.claim_orphans(count)
            if claimed:
                return claimed
        return self._decode(self._xreadgroup(">", count, block_ms))

    def replay_pending(self) -> None:
        """Re-read this consumer's own unacked entries on the next `read` (after a connection was lost mid-read,
        an entry may have been delivered to it with the reply lost)."""
        self._replay_cursor = "0-0"

    def reclaim(self, count: int = 16) -> list[Delivery[M]]:
        """Take over entries idle longer than the visibility timeout (their consumer is presumed dead)."""
        result = self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.visibility_timeout_ms, start_id="0-0", count=count
        )
        entries = result[1] if len(result) > 1 else []
        deliveries = self._decode([(self.stream, entries)])
        if deliveries:
            log.info("%s reclaimed %d entries from %s", self.consumer, len(deliveries), self.stream)
        return deliveries

    def claim_orphans(self, count: int = 16) -> list[Delivery[M]]:
        """Take over the pending entries of consumers whose registration has expired (checked every
        ORPHAN_CHECK_INTERVAL_S); a dead consumer left with nothing pending is removed from the group."""
        if self.owner_service is None or time.monotonic() < self._next_orphan_check:
            return []
        self._next_orphan_check = time.monotonic() + ORPHAN_CHECK_INTERVAL_S
        claimed: list = []
        for info in self.client.xinfo_consumers(self.stream, self.group):
            name = _text(info["name"])
            if name == self.consumer or len(claimed) >= count:
                continue
            if self.client.exists(keys.service_registration_key(self.owner_service, name)):
                continue
            if int(info["pending"]) == 0:
                if int(info["idle"]) > self.visibility_timeout_ms:
                    self.client.xgroup_delconsumer(self.stream, self.group, name)
                continue
            held = self.client.xpending_range(self.stream, self.group, min="-", max="+",
                                              count=count - len(claimed), consumername=name)
            ids = [entry["message_id"] for entry in held]
            if ids:
                claimed.extend(self.client.xclaim(self.stream, self.group, self.consumer, ORPHAN_MIN_IDLE_MS, ids))
                log.warning("%s took over %d entries of %s on %s: its registration is gone",
                            self.consumer, len(ids), name, self.stream)
        return self._decode([(self.stream, claimed)])

    def ack(self, entry_ids: Iterable[str]) -> int:
        ids = list(entry_ids)
        return int(self.client.xack(self.stream, self.group, *ids)) if ids else 0

    def forward(
        self, delivery: Delivery[M], out_stream: str, output: Message, *, done_set: str, member: str
    ) -> bool:
        """Write `output` downstream unless `member` was already forwarded, and ack `delivery`; atomic.

        Returns True when the output was written, False when it was a duplicate (acked only).
        """
        added = self._forward_script(
            keys=[out_stream, done_set, self.stream],
            args=[self.group, delivery.entry_id, member, output.SerializeToString()],
        )
        return bool(added)

    # --- introspection --------------------------------------------------------------------------------

    def pending_count(self) -> int:
        return pending_count(self.client, self.stream, self.group)

    def _xreadgroup(self, start: str, count: int, block_ms: int | None):  # noqa: ANN202
        return self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )

    def _decode(self, response) -> list[Delivery[M]]:  # noqa: ANN001
        deliveries: list[Delivery[M]] = []
        poison: list[str] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                entry_id = _text(entry_id)
                if not fields:  # deleted entry still pending
                    poison.append(entry_id)
                    continue
                message = self.message_type()
                try:
                    message.ParseFromString(fields[PAYLOAD_FIELD])
                except (DecodeError, KeyError):
                    log.error("dropping undecodable entry %s on %s", entry_id, self.stream)
                    poison.append(entry_id)
                    continue
                deliveries.append(Delivery(entry_id, message))
        self.ack(poison)
        return deliveries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _next_id(entry_id: str) -> str:
    millis, seq = entry_id.split("-")
    return f"{millis}-{int(seq) + 1}"


def trim_consumed(client: redis.Redis, stream: str, retention_s: float) -> int:
    """Delete the entries of `stream` that every consumer group has read and acked and that are older than
    `retention_s` (kept that long for inspection); returns how many went. A stream without groups is left."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream
        return 0
    if not groups:
        return 0
    keep_from: list[str] = []
    for info in groups:
        pending = client.xpending(stream, info["name"])
        if pending and int(pending["pending"]) > 0:
            keep_from.append(_text(pending["min"]))
        else:
            keep_from.append(_next_id(_text(info["last-delivered-id"])))
    seconds, micros = client.time()
    keep_from.append(f"{max(0, int(seconds * 1000 + micros // 1000 - retention_s * 1000))}-0")
    threshold = min(keep_from, key=lambda entry_id: tuple(int(part) for part in entry_id.split("-")))
    return int(client.xtrim(stream, minid=threshold, approximate=False))


def publish(client: redis.Redis, stream: str, message: Message) -> str:
    entry_id = client.xadd(stream, {PAYLOAD_FIELD: message.SerializeToString()})
    return _text(entry_id)


def pending_count(client: redis.Redis, stream: str, group: str) -> int:
    try:
        info = client.xpending(stream, group)
    except redis.ResponseError:
        return 0
    return int(info["pending"]) if info else 0


def backlog(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """Entries not yet delivered to the group (lag), delivered but unacked (pending), and the stream length.

    Redis 7 reports the lag itself; on 6.2 (the embedded server) it is counted from the group's
    last-delivered id, capped at 100k entries.
    """
    try:
        length = int(client.xlen(stream))
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return {"lag": 0, "pending": 0, "length": 0}
    lag = 0
    for info in groups:
        name = _text(info["name"])
        if name != group:
            continue
        if info.get("lag") is not None:
            lag = int(info["lag"])
        else:
            last = info["last-delivered-id"]
            last = _text(last)
            lag = len(client.xrange(stream, min=f"({last}", max="+", count=100_000))
    return {"lag": lag, "pending": pending_count(client, stream, group), "length": length}
