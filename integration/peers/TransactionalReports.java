// A transactional producer of weather reports on Kafka's own Java client, for the tests in
// integration/foreign.rs: the records a real foreign producer writes, transactions committed
// and aborted among them. It needs only the kafka-clients jar (scripts/kafka.sh install puts it
// in .kafka/VERSION/lib); the test compiles and runs it:
//
//   javac -d CLASSES -cp '.kafka/VERSION/lib/*' integration/peers/TransactionalReports.java
//   java -cp 'CLASSES:.kafka/VERSION/lib/*' TransactionalReports BOOTSTRAP TOPIC COMPRESSION
//
// COMPRESSION is the producer's compression.type: none, gzip, snappy, lz4 or zstd. Records are
// what `weather produce` writes: key the month's English name, value a protobuf Report, sent to
// the partition the client's default partitioner picks for the key (murmur2, as ours).
//
// Commands come one a line on stdin, so the test can interleave transactions of several
// producers with its own writes; each is answered on stdout by what it did, then "ok" (or
// "error MESSAGE" and exit 1):
//   begin ID               starts a transaction of producer ID (its transactional.id; the
//                          producer is made and initialised on first use)
//   send ID DATE DEGREES   sends one report in ID's transaction
//   flush ID               waits until the broker holds everything ID sent, then prints
//                          "sent DATE DEGREES PARTITION OFFSET" for each record, in send order
//   commit ID, abort ID    ends ID's transaction; abort flushes first, so the aborted records
//                          are in the log for readers to skip rather than dropped in the client
//   encode DATE DEGREES    prints the value of that report in hex
// End of input closes every producer and exits 0.

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.time.LocalDate;
import java.time.format.TextStyle;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class TransactionalReports {
    /** One record sent and not yet reported by a flush. */
    private record Sent(String date, String degrees, Future<RecordMetadata> ack) {}

    private final String bootstrap;
    private final String topic;
    private final String compression;
    private final Map<String, KafkaProducer<String, byte[]>> producers = new HashMap<>();
    private final Map<String, List<Sent>> unflushed = new HashMap<>();

    private TransactionalReports(String bootstrap, String topic, String compression) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.compression = compression;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: TransactionalReports BOOTSTRAP TOPIC COMPRESSION");
            System.exit(2);
        }
        TransactionalReports reports = new TransactionalReports(args[0], args[1], args[2]);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        try {
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                reports.run(line.trim().split("\\s+"));
                System.out.println("ok");
                System.out.flush();
            }
        } catch (Exception e) {
            System.out.println("error " + e);
            System.out.flush();
            System.exit(1);
        } finally {
            reports.producers.values().forEach(KafkaProducer::close);
        }
    }

    private void run(String[] words) throws Exception {
        switch (words[0]) {
            case "begin" -> producer(words[1]).beginTransaction();
            case "send" -> send(words[1], words[2], words[3]);
            case "flush" -> flush(words[1]);
            case "commit" -> {
                flush(words[1]);
                producers.get(words[1]).commitTransaction();
            }
            case "abort" -> {
                flush(words[1]);
                producers.get(words[1]).abortTransaction();
            }
            case "encode" -> System.out.println(
                    HexFormat.of().formatHex(report(words[1], Double.parseDouble(words[2]))));
            default -> throw new IllegalArgumentException("unknown command " + words[0]);
        }
    }

    private KafkaProducer<String, byte[]> producer(String id) {
        return producers.computeIfAbsent(id, transactionalId -> {
            Properties config = new Properties();
            config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            config.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
            config.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
            // Batches go when the test says flush, so each holds several records to compress.
            config.put(ProducerConfig.LINGER_MS_CONFIG, "60000");
            // The test holds transactions open while it writes beside them; on a loaded
            // machine that can take longer than the default minute.
            config.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "600000");
            KafkaProducer<String, byte[]> producer =
                    new KafkaProducer<>(config, new StringSerializer(), new ByteArraySerializer());
            producer.initTransactions();
            return producer;
        });
    }

    private void send(String id, String date, String degrees) {
        String month = LocalDate.parse(date).getMonth().getDisplayName(TextStyle.FULL, Locale.ENGLISH);
        byte[] value = report(date, Double.parseDouble(degrees));
        // No partition given: the default partitioner hashes the key with murmur2.
        Future<RecordMetadata> ack = producer(id).send(new ProducerRecord<>(topic, month, value));
        unflushed.computeIfAbsent(id, k -> new ArrayList<>()).add(new Sent(date, degrees, ack));
    }

    private void flush(String id) throws Exception {
        producer(id).flush();
        for (Sent sent : unflushed.getOrDefault(id, List.of())) {
            RecordMetadata at = sent.ack().get();
            System.out.println("sent " + sent.date() + " " + sent.degrees() + " " + at.partition() + " " + at.offset());
        }
        unflushed.remove(id);
    }

    /**
     * Report {string date = 1; double degrees = 2;} by hand: field 1 is tag 0x0A, a varint
     * length and the UTF-8 bytes; field 2 is tag 0x11 and the double, 8 bytes little-endian.
     */
    static byte[] report(String date, double degrees) {
        byte[] text = date.getBytes(StandardCharsets.UTF_8);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(0x0A);
        int length = text.length;
        while (length >= 0x80) {
            out.write((length & 0x7F) | 0x80);
            length >>>= 7;
        }
        out.write(length);
        out.write(text, 0, text.length);
        out.write(0x11);
        out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putDouble(degrees).array(), 0, 8);
        return out.toByteArray();
    }
}
