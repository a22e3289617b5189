//! The MQTT 3.1.1 packets a Sparkplug B edge node needs, as pure functions over
//! bytes: CONNECT (with a will and credentials), CONNACK, PUBLISH (QoS 0 and 1),
//! PUBACK, SUBSCRIBE, SUBACK, PINGREQ/PINGRESP and DISCONNECT. Written here rather
//! than linking an MQTT client crate: it is a few hundred lines against a size
//! budget, and the broker is an untrusted peer, so every length is checked and a
//! packet larger than `MAX_PACKET` is an error, never an allocation.

/// The largest packet accepted from the broker (commands and STATE are small).
pub const MAX_PACKET: usize = 256 << 10;

/// What the edge node sends when it connects.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keep_alive_secs: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Topic, payload and QoS of the will (published by the broker if we vanish).
    pub will: Option<(&'a str, &'a [u8], u8)>,
}

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    ConnAck {
        return_code: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        packet_id: Option<u16>,
    },
    PubAck {
        packet_id: u16,
    },
    SubAck {
        packet_id: u16,
        granted: Vec<u8>,
    },
    PingResp,
    /// Anything else a client may see (PUBREC for QoS 2 we never ask for...): ignored.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttError {
    #[error("the broker sent a malformed packet: {0}")]
    Malformed(&'static str),
    #[error("the broker sent a packet of {0} bytes (at most {MAX_PACKET} accepted)")]
    TooLarge(usize),
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&s[..s.len().min(u16::MAX as usize)]);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub fn connect(c: &Connect<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if let Some((_, _, qos)) = c.will {
        flags |= 0x04 | ((qos & 3) << 3);
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&c.keep_alive_secs.to_be_bytes());
    put_str(&mut body, c.client_id.as_bytes());
    if let Some((topic, payload, _)) = c.will {
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, payload);
    }
    if let Some(u) = c.username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = c.password {
        put_str(&mut body, p.as_bytes());
    }
    packet(0x10, &body)
}

/// PUBLISH; `packet_id` is required for QoS 1.
pub fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, packet_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | ((qos & 3) << 1) | u8::from(retain), &body)
}

pub fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}

pub fn subscribe(packet_id: u16, topics: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for (topic, qos) in topics {
        put_str(&mut body, topic.as_bytes());
        body.push(*qos);
    }
    packet(0x82, &body)
}

pub fn pingreq() -> Vec<u8> {
    vec![0xc0, 0]
}

pub fn disconnect() -> Vec<u8> {
    vec![0xe0, 0]
}

/// One packet from the front of `buf`: `Ok(Some((packet, bytes used)))`, `Ok(None)`
/// when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Incoming, usize)>, MqttError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let (mut len, mut mult, mut at) = (0usize, 1usize, 1usize);
    loop {
        let Some(&b) = buf.get(at) else { return Ok(None) };
        len += (b & 0x7f) as usize * mult;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        mult *= 128;
        if at > 4 {
            return Err(MqttError::Malformed("remaining length longer than 4 bytes"));
        }
    }
    if len > MAX_PACKET {
        return Err(MqttError::TooLarge(len));
    }
    let Some(body) = buf.get(at..at + len) else { return Ok(None) };
    let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let packet = match first >> 4 {
        2 => Incoming::ConnAck { return_code: *body.get(1).ok_or(MqttError::Malformed("short CONNACK"))? },
        3 => {
            let qos = (first >> 1) & 3;
            let topic_len = u16_at(0).ok_or(MqttError::Malformed("short PUBLISH"))? as usize;
            let topic = body.get(2..2 + topic_len).ok_or(MqttError::Malformed("PUBLISH topic past its end"))?;
            let topic = String::from_utf8(topic.to_vec()).map_err(|_| MqttError::Malformed("topic is not UTF-8"))?;
            let mut rest = 2 + topic_len;
            let packet_id = if qos > 0 {
                let id = u16_at(rest).ok_or(MqttError::Malformed("PUBLISH without its packet id"))?;
                rest += 2;
                Some(id)
            } else {
                None
            };
            Incoming::Publish { topic, payload: body[rest..].to_vec(), qos, packet_id }
        }
        4 => Incoming::PubAck { packet_id: u16_at(0).ok_or(MqttError::Malformed("short PUBACK"))? },
        9 => Incoming::SubAck {
            packet_id: u16_at(0).ok_or(MqttError::Malformed("short SUBACK"))?,
            granted: body.get(2..).unwrap_or_default().to_vec(),
        },
        13 => Incoming::PingResp,
        other => Incoming::Other(other),
    };
    Ok(Some((packet, at + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_carries_the_will_and_credentials() {
        let c = Connect {
            client_id: "gw",
            keep_alive_secs: 30,
            username: Some("u"),
            password: Some("p"),
            will: Some(("spBv1.0/g/NDEATH/gw", &[1, 2], 1)),
        };
        let bytes = connect(&c);
        let mut expected = vec![0x10, 0];
        let body: &[u8] = &[
            0, 4, b'M', b'Q', b'T', b'T', 4, 0xce, 0, 30, 0, 2, b'g', b'w', 0, 19, b's', b'p', b'B', b'v', b'1', b'.',
            b'0', b'/', b'g', b'/', b'N', b'D', b'E', b'A', b'T', b'H', b'/', b'g', b'w', 0, 2, 1, 2, 0, 1, b'u', 0, 1,
            b'p',
        ];
        expected[1] = body.len() as u8;
        expected.extend_from_slice(body);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn packets_from_the_broker_are_decoded_and_bounded() {
        // A QoS 1 publish (STATE), split anywhere: nothing until it is whole.
        let p = publish("spBv1.0/STATE/scada", b"{\"online\":true}", 1, true, 7);
        for cut in 0..p.len() {
            assert_eq!(decode(&p[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (packet, used) = decode(&p).unwrap().unwrap();
        assert_eq!(used, p.len());
        assert_eq!(
            packet,
            Incoming::Publish {
                topic: "spBv1.0/STATE/scada".into(),
                payload: b"{\"online\":true}".to_vec(),
                qos: 1,
                packet_id: Some(7)
            }
        );
        assert_eq!(decode(&[0x20, 2, 0, 5]).unwrap(), Some((Incoming::ConnAck { return_code: 5 }, 4)));
        assert_eq!(
            decode(&[0x90, 3, 0, 1, 1]).unwrap(),
            Some((Incoming::SubAck { packet_id: 1, granted: vec![1] }, 5))
        );
        assert_eq!(decode(&[0xd0, 0]).unwrap(), Some((Incoming::PingResp, 2)));
        // A long payload uses a multi-byte remaining length.
        let big = publish("t", &[7u8; 300], 0, false, 0);
        assert_eq!(&big[1..3], &[0xaf, 0x02]);
        assert!(
            matches!(decode(&big).unwrap(), Some((Incoming::Publish { ref payload, .. }, n)) if payload.len() == 300 && n == big.len())
        );
        // Hostile: huge announced length, five length bytes, a topic past the end.
        assert_eq!(decode(&[0x30, 0xff, 0xff, 0xff, 0x7f]), Err(MqttError::TooLarge(268_435_455)));
        assert!(decode(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert_eq!(decode(&[0x30, 3, 0, 9, b'a']), Err(MqttError::Malformed("PUBLISH topic past its end")));
        assert_eq!(decode(&[0x32, 3, 0, 1, b'a']), Err(MqttError::Malformed("PUBLISH without its packet id")));
    }
}
