//! renderd wire protocol: sizes, byte offsets, round trips, replies and
//! invalid input.

use tilepipe::renderd::{
    read_message, write_message, Command, ProtocolError, ProtocolVersion, ReadError, Request,
};
use tilepipe::tile::{Metatile, Tile};

fn int_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn requests() -> Vec<Request> {
    let tile = Tile::new(9, 297, 191).unwrap();
    let v2 = Request::new(Command::RenderPrio, tile, "osm-carto");
    let v1 = Request {
        version: ProtocolVersion::V1,
        style: "default".into(),
        ..v2.clone()
    };
    let v3 = v2
        .clone()
        .with_v3_fields("image/png", "en,de,_")
        .reply(Command::Done);
    vec![v1, v2, v3]
}

#[test]
fn sizes_and_round_trips() {
    for (request, size) in requests().into_iter().zip([20, 64, 144]) {
        assert_eq!(request.version.message_len(), size);
        let bytes = request.encode().unwrap();
        assert_eq!(bytes.len(), size, "{request}");
        assert_eq!(int_at(&bytes, 0), request.version.code());
        assert_eq!(int_at(&bytes, 4), request.command.code());
        assert_eq!(
            (int_at(&bytes, 8), int_at(&bytes, 12), int_at(&bytes, 16)),
            (297, 191, 9)
        );
        assert_eq!(Request::decode(&bytes).unwrap(), request);
    }
}

#[test]
fn string_fields_sit_at_fixed_offsets() {
    let v3 = requests().pop().unwrap();
    let bytes = v3.encode().unwrap();
    let field = |at: usize| {
        let field = &bytes[at..at + 41];
        let end = field.iter().position(|&b| b == 0).unwrap();
        std::str::from_utf8(&field[..end]).unwrap().to_string()
    };
    assert_eq!(field(20), "osm-carto");
    assert_eq!(field(61), "image/png");
    assert_eq!(field(102), "en,de,_");
    // A 40-byte style fills its field up to the NUL at byte 60.
    let long = Request {
        style: "s".repeat(40),
        ..requests()[1].clone()
    };
    let bytes = long.encode().unwrap();
    assert_eq!(&bytes[20..60], "s".repeat(40).as_bytes());
    assert_eq!(bytes[60], 0);
    assert_eq!(Request::decode(&bytes).unwrap().style, "s".repeat(40));
}

#[test]
fn v1_and_v2_decode_with_renderd_defaults() {
    let [v1, v2, _] = <[Request; 3]>::try_from(requests()).unwrap();
    let decoded = Request::decode(&v1.encode().unwrap()).unwrap();
    assert_eq!(
        (
            decoded.style.as_str(),
            decoded.mimetype.as_str(),
            decoded.options.as_str()
        ),
        ("default", "image/png", "")
    );
    // v1 cannot carry a style: encoding drops it.
    let named = Request {
        style: "osm".into(),
        ..v1
    };
    assert_eq!(
        Request::decode(&named.encode().unwrap()).unwrap().style,
        "default"
    );
    let decoded = Request::decode(&v2.encode().unwrap()).unwrap();
    assert_eq!(
        (decoded.mimetype.as_str(), decoded.options.as_str()),
        ("image/png", "")
    );
}

#[test]
fn padding_is_ignored() {
    // renderd 0.6.1 answers v2 requests with the start of its v3 buffer's
    // MIME type ("ima") in the padding.
    let v2 = &requests()[1];
    let mut bytes = v2.reply(Command::Done).encode().unwrap();
    bytes[61..64].copy_from_slice(b"ima");
    assert_eq!(Request::decode(&bytes).unwrap(), v2.reply(Command::Done));
}

#[test]
fn replies_echo_the_request() {
    for request in requests() {
        let reply = request.reply(Command::NotDone);
        assert_eq!(reply.command, Command::NotDone);
        let (mut a, mut b) = (request.encode().unwrap(), reply.encode().unwrap());
        a[4..8].fill(0);
        b[4..8].fill(0);
        assert_eq!(a, b, "only the command differs");
        assert!(request.is_answered_by(&reply));
    }
    // Replies echo the tile asked for, not the metatile origin, so a reply
    // for another tile of the same metatile does not answer.
    let request = &requests()[1];
    let mut other = request.reply(Command::Done);
    other.y += 1;
    assert!(!request.is_answered_by(&other));
    let mut other = request.reply(Command::Done);
    other.style = "other".into();
    assert!(!request.is_answered_by(&other));

    let metatile = Metatile {
        z: 9,
        x: 296,
        y: 184,
    };
    let request = Request::for_metatile(Command::RenderBulk, metatile, "s");
    assert_eq!((request.x, request.y, request.z), (296, 184, 9));
    assert_eq!(request.tile(), Some(Tile::new(9, 296, 184).unwrap()));
}

#[test]
fn garbage_and_short_input_are_errors() {
    let good = requests()[1].encode().unwrap();
    assert!(matches!(
        Request::decode(&good[..19]),
        Err(ProtocolError::Short {
            expected: 20,
            got: 19
        })
    ));
    assert!(matches!(
        Request::decode(&good[..63]),
        Err(ProtocolError::Length {
            expected: 64,
            got: 63,
            ..
        })
    ));
    assert!(matches!(
        Request::decode(&[0xAB; 64]),
        Err(ProtocolError::Version(_))
    ));
    let mut zero_version = good.clone();
    zero_version[..4].fill(0);
    assert_eq!(
        Request::decode(&zero_version),
        Err(ProtocolError::Version(0))
    );
    let mut unterminated = good.clone();
    unterminated[20..61].fill(b'a');
    let e = Request::decode(&unterminated).unwrap_err();
    assert!(
        e.to_string().contains("style field: not NUL-terminated"),
        "{e}"
    );
    let mut not_utf8 = good.clone();
    not_utf8[20] = 0xFF;
    assert!(matches!(
        Request::decode(&not_utf8),
        Err(ProtocolError::Field { field: "style", .. })
    ));
    // Unknown commands decode, so a server can answer them cmdNotDone.
    let mut unknown = good;
    unknown[4..8].copy_from_slice(&99i32.to_le_bytes());
    assert_eq!(
        Request::decode(&unknown).unwrap().command,
        Command::Unknown(99)
    );
}

#[test]
fn unencodable_requests_are_errors() {
    let long = Request {
        style: "s".repeat(41),
        ..requests()[1].clone()
    };
    assert!(matches!(
        long.encode(),
        Err(ProtocolError::Field { field: "style", .. })
    ));
    let nul = requests()[2].clone().with_v3_fields("image/png", "a\0b");
    assert!(matches!(
        nul.encode(),
        Err(ProtocolError::Field {
            field: "options",
            ..
        })
    ));
}

/// A reader that hands out one byte per read.
struct Trickle<'a>(&'a [u8]);

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some((&first, rest)) = self.0.split_first() {
            buf.put_slice(&[first]);
            self.0 = rest;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn stream_reading_handles_short_reads_and_mixed_versions() {
    let mut stream = Vec::new();
    for request in requests() {
        write_message(&mut stream, &request).await.unwrap();
    }
    assert_eq!(stream.len(), 20 + 64 + 144);
    let mut reader = Trickle(&stream);
    for request in requests() {
        assert_eq!(read_message(&mut reader).await.unwrap(), Some(request));
    }
    assert_eq!(read_message(&mut reader).await.unwrap(), None, "clean end");

    let mut truncated = Trickle(&stream[..20 + 30]);
    read_message(&mut truncated).await.unwrap();
    assert!(matches!(
        read_message(&mut truncated).await,
        Err(ReadError::Truncated {
            expected: 64,
            got: 30
        })
    ));
    let mut truncated = Trickle(&stream[..7]);
    assert!(matches!(
        read_message(&mut truncated).await,
        Err(ReadError::Truncated {
            expected: 20,
            got: 7
        })
    ));
    let garbage = [0x55u8; 40];
    assert!(matches!(
        read_message(&mut Trickle(&garbage)).await,
        Err(ReadError::Protocol(ProtocolError::Version(_)))
    ));
}
