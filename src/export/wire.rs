//! remote_write 1.0 on the wire: the `prometheus.WriteRequest` protobuf (sent
//! Snappy-compressed, `crate::snappy`). Three messages are small enough to write by
//! hand, which keeps a protobuf runtime out of the appliance.
//!
//! WriteRequest is a repeated field only, so encoded series of several rounds can be
//! concatenated into one valid request: the queue stores each round's series
//! already encoded and a send is the concatenation of the oldest rounds.

/// The NaN Prometheus reads as "this series ended" (a stale marker).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// One series with one sample. `labels` include `__name__`; they are sorted here.
pub fn encode_series(out: &mut Vec<u8>, labels: &mut [(&str, &str)], value: f64, timestamp_ms: i64) {
    labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut series = Vec::with_capacity(64 + labels.len() * 24);
    for (name, value) in labels.iter() {
        let label_len = field_len(name.len()) + field_len(value.len());
        series.push(0x0a); // TimeSeries.labels = 1
        varint(&mut series, label_len as u64);
        bytes_field(&mut series, 0x0a, name.as_bytes()); // Label.name = 1
        bytes_field(&mut series, 0x12, value.as_bytes()); // Label.value = 2
    }
    let mut sample = [0u8; 20];
    let n = encode_sample(&mut sample, value, timestamp_ms);
    bytes_field(&mut series, 0x12, &sample[..n]); // TimeSeries.samples = 2
    bytes_field(out, 0x0a, &series); // WriteRequest.timeseries = 1
}

/// `Sample { double value = 1; int64 timestamp = 2; }` into `buf`; returns its length.
fn encode_sample(buf: &mut [u8; 20], value: f64, timestamp_ms: i64) -> usize {
    buf[0] = 0x09;
    buf[1..9].copy_from_slice(&value.to_bits().to_le_bytes());
    buf[9] = 0x10;
    let mut v = Vec::with_capacity(10);
    varint(&mut v, timestamp_ms as u64);
    buf[10..10 + v.len()].copy_from_slice(&v);
    10 + v.len()
}

fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn bytes_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_the_protobuf_prometheus_expects() {
        let mut out = Vec::new();
        let mut labels = [("job", "x"), ("__name__", "up")];
        encode_series(&mut out, &mut labels, 1.0, 1000);
        // timeseries { labels { name "__name__" value "up" } labels { name "job" value "x" }
        //              samples { value 1.0 timestamp 1000 } }
        let mut expected = vec![0x0a, 40];
        expected.extend([0x0a, 14, 0x0a, 8]);
        expected.extend(b"__name__");
        expected.extend([0x12, 2]);
        expected.extend(b"up");
        expected.extend([0x0a, 8, 0x0a, 3]);
        expected.extend(b"job");
        expected.extend([0x12, 1]);
        expected.extend(b"x");
        expected.extend([0x12, 12, 0x09]);
        expected.extend(1.0f64.to_le_bytes());
        expected.extend([0x10, 0xe8, 0x07]);
        assert_eq!(out, expected);
        // A negative timestamp is ten bytes of varint, as protobuf's int64 is.
        let mut buf = [0u8; 20];
        assert_eq!(encode_sample(&mut buf, 0.0, -1), 20);
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
    }
}
