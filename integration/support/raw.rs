//! Writing records exactly as given, as another producer would: junk, replays, days out of
//! order. Not idempotent and not part of the library, which only ever writes through its
//! idempotent producer.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use weather_stream::kafka::Partition;
use weather_stream::kafka::wire::Connection;

/// `partition.produce(records)`: one batch, acks=all, compressed as asked; the offsets given.
pub trait ProduceRaw {
    async fn produce(&self, records: Vec<rskafka::record::Record>) -> Result<Vec<i64>, String> {
        self.produce_compressed(records, Compression::None).await
    }

    async fn produce_compressed(
        &self,
        records: Vec<rskafka::record::Record>,
        compression: Compression,
    ) -> Result<Vec<i64>, String>;
}

impl ProduceRaw for Partition {
    async fn produce_compressed(
        &self,
        records: Vec<rskafka::record::Record>,
        compression: Compression,
    ) -> Result<Vec<i64>, String> {
        let encoded: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // kafka-protocol starts a new batch wherever offset - sequence changes, and
                // Kafka takes one batch per partition: the base sequence stays -1 (no
                // producer id), and the records keep to one batch.
                sequence: i as i32 - 1,
                timestamp: r.timestamp.timestamp_millis(),
                key: r.key.map(Bytes::from),
                value: r.value.map(Bytes::from),
                headers: Default::default(),
            })
            .collect();
        let count = encoded.len() as i64;
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &encoded,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .map_err(|e| e.to_string())?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic().into())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(self.id())
                            .with_records(Some(batch.freeze())),
                    ]),
            ]);
        let leader = self.leader_address().await.map_err(|e| e.to_string())?;
        let connection = Connection::open(&leader).await.map_err(|e| e.to_string())?;
        let response = connection
            .request(request, 3..=9)
            .await
            .map_err(|e| e.to_string())?;
        let answer = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.index == self.id())
            .ok_or("no answer for the partition")?;
        if answer.error_code != 0 {
            return Err(format!("produce refused: error code {}", answer.error_code));
        }
        Ok((answer.base_offset..answer.base_offset + count).collect())
    }
}
