"""The product's partitioner places every key where Kafka's default partitioner (Java's, and aiokafka's) does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.clients import KeyPartitioner, murmur2


@given(st.binary(max_size=300))
def test_murmur2_equals_the_reference_for_any_bytes(data: bytes) -> None:
    assert murmur2(data) == reference_murmur2(data)


def test_murmur2_matches_values_computed_by_the_java_client() -> None:
    # org.apache.kafka.common.utils.Utils.murmur2 (signed int in Java) of these keys
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF


@given(st.binary(min_size=0, max_size=120), st.integers(min_value=1, max_value=64))
def test_keys_go_to_the_partition_the_default_partitioner_chooses(key: bytes, partitions: int) -> None:
    everything = list(range(partitions))
    assert KeyPartitioner()(key, everything, everything) == DefaultPartitioner()(key, everything, everything)


def test_a_null_key_goes_to_an_available_partition() -> None:
    chosen = {KeyPartitioner()(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert chosen == {1, 3}
    assert KeyPartitioner()(None, [0, 1], []) in (0, 1)
