"""The shard graph of one stream: who is whose parent, what is open, what is closed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_shard_id: str | None
    starting_sequence_number: str | None
    ending_sequence_number: str | None

    @property
    def closed(self) -> bool:
        return self.ending_sequence_number is not None


@dataclass
class ShardGraph:
    stream_arn: str
    shards: dict[str, Shard] = field(default_factory=dict)

    def add(self, shard: Shard) -> None:
        self.shards[shard.shard_id] = shard

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self.shards

    def children_of(self, shard_id: str) -> list[str]:
        return sorted(s.shard_id for s in self.shards.values() if s.parent_shard_id == shard_id)

    def parents_of(self, shard_id: str) -> list[str]:
        """The parents a shard must wait for. A parent that has aged out of the stream is
        not listed (nothing is left to read in it)."""
        parent = self.shards[shard_id].parent_shard_id
        return [parent] if parent else []

    def open_shards(self) -> list[Shard]:
        return [s for s in self.shards.values() if not s.closed]

    def in_lineage_order(self) -> list[Shard]:
        """Parents before children (a topological order), ties broken by shard id."""
        ordered: list[Shard] = []
        seen: set[str] = set()

        def visit(shard: Shard, trail: set[str]) -> None:
            if shard.shard_id in seen or shard.shard_id in trail:
                return
            parent = self.shards.get(shard.parent_shard_id or "")
            if parent is not None:
                visit(parent, trail | {shard.shard_id})
            seen.add(shard.shard_id)
            ordered.append(shard)

        for shard in sorted(self.shards.values(), key=lambda s: s.shard_id):
            visit(shard, set())
        return ordered
