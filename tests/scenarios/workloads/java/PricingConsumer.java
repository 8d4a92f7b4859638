// Scenario consumer written in Java: a plain Kafka consumer (kafka-clients) that
// calls a downstream HTTP service once per record, as many services do.
//
//   java -cp KAFKA_LIBS/*:DIR PricingConsumer BOOTSTRAP TOPIC GROUP URL
//
// Prints "ready" once subscribed.  Runs until killed.
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.time.Duration;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class PricingConsumer {
    static void callPricingService(URL url) throws Exception {
        HttpURLConnection conn = (HttpURLConnection) url.openConnection();
        conn.setConnectTimeout(10_000);
        conn.setReadTimeout(30_000);
        try (InputStream in = conn.getInputStream()) {
            in.readAllBytes();
        }
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("group.id", args[2]);
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        props.put("max.poll.records", "5");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        URL url = new URL(args[3]);
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(args[1]));
            boolean announced = false;
            while (true) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(500));
                if (!announced && !consumer.assignment().isEmpty()) {
                    System.out.println("ready");
                    System.out.flush();
                    announced = true;
                }
                for (ConsumerRecord<byte[], byte[]> record : records) {
                    try {
                        callPricingService(url);
                    } catch (Exception e) {
                        Thread.sleep(50);
                    }
                }
                if (!records.isEmpty()) {
                    consumer.commitSync();
                }
            }
        }
    }
}
