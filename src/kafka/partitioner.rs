//! Kafka's default key partitioner: `murmur2(key) & 0x7fffffff % partitions`.
//!
//! The same function the Java client and kafka-python use, so every client agrees on where
//! a month lands. (librdkafka's default, `consistent_random`, differs: a librdkafka producer
//! needs `partitioner=murmur2_random` to agree.)

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// MurmurHash2, 32-bit, with the seed and tail handling of Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= (*byte as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_land_where_the_java_client_puts_them() {
        // The table from DESIGN.md, for 4 partitions.
        let expected = [
            ("January", 2),
            ("February", 1),
            ("March", 0),
            ("April", 2),
            ("May", 3),
            ("June", 2),
            ("July", 1),
            ("August", 0),
            ("September", 0),
            ("October", 3),
            ("November", 3),
            ("December", 2),
        ];
        for (month, partition) in expected {
            assert_eq!(partition_for(month.as_bytes(), 4), partition, "{month}");
        }
    }

    #[test]
    fn matches_kafka_reference_hashes() {
        // Values from Kafka's own UtilsTest.testMurmur2, as signed Java ints.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, hash) in cases {
            assert_eq!(
                murmur2(key) as i32,
                hash,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
