//! The renderd client against a fake renderd (Unix socket and TCP): reply
//! matching, connection reuse, short reads, timeouts, reconnects, errors.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tilepipe::renderd::{
    read_message, write_message, Client, Command, Endpoint, RenderdError, Request,
};
use tilepipe::tile::Tile;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

/// What the fake renderd does, chosen by the request's style.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    while let Ok(Some(request)) = read_message(&mut stream).await {
        match request.style.as_str() {
            // Never answers (renderd with an unknown style).
            "silent" => continue,
            // Hangs up without answering.
            "hangup" => return,
            // Answers, then hangs up: the next request finds it closed.
            "once" => {
                write_message(&mut stream, &request.reply(Command::Done))
                    .await
                    .unwrap();
                return;
            }
            "dirty" => {
                write_message(&mut stream, &request.reply(Command::NotDone))
                    .await
                    .unwrap();
            }
            // Sends garbage.
            "garbage" => {
                stream.write_all(&[0x77; 64]).await.unwrap();
            }
            _ => {
                // A reply for another tile first (a duplicate finishing),
                // then the answer, trickled a few bytes at a time.
                let mut other = request.reply(Command::Done);
                other.x += 1;
                let mut bytes = other.encode().unwrap();
                bytes.extend(request.reply(Command::Done).encode().unwrap());
                for chunk in bytes.chunks(7) {
                    stream.write_all(chunk).await.unwrap();
                    stream.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

/// Starts a fake renderd on a Unix socket; returns the accepted-connection
/// counter.
fn fake_unix(path: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_connection(stream));
        }
    });
    accepted
}

async fn fake_tcp() -> (Endpoint, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_connection(stream));
        }
    });
    let endpoint = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    (endpoint, accepted)
}

fn request(style: &str, x: u32) -> Request {
    Request::new(Command::RenderBulk, Tile::new(12, x, 1360).unwrap(), style)
}

async fn exercise(endpoint: Endpoint, accepted: &AtomicUsize) {
    let mut client = Client::connect(endpoint.clone())
        .await
        .unwrap()
        .with_reply_timeout(Some(Duration::from_secs(10)));
    assert!(client.is_connected());
    for x in 0..5 {
        assert_eq!(
            client.request(&request("osm", x)).await.unwrap(),
            Command::Done
        );
    }
    assert_eq!(
        client.request(&request("dirty", 1)).await.unwrap(),
        Command::NotDone
    );
    // v3 requests too.
    let v3 = request("osm", 9).with_v3_fields("image/png", "en");
    assert_eq!(client.request(&v3).await.unwrap(), Command::Done);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection reused");

    // The server hangs up after answering; the next request goes out again
    // on a new connection.
    assert_eq!(
        client.request(&request("once", 1)).await.unwrap(),
        Command::Done
    );
    assert_eq!(
        client.request(&request("osm", 2)).await.unwrap(),
        Command::Done
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // No answer: a timeout, and the connection is replaced.
    let mut impatient =
        Client::new(endpoint.clone()).with_reply_timeout(Some(Duration::from_millis(200)));
    let e = impatient.request(&request("silent", 1)).await.unwrap_err();
    assert!(matches!(e, RenderdError::Timeout { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("did not answer cmdRenderBulk 12/1/1360"),
        "{e}"
    );
    assert!(!impatient.is_connected());
    assert_eq!(
        impatient.request(&request("osm", 3)).await.unwrap(),
        Command::Done
    );

    // A hang-up on a fresh connection is an error, not retried.
    let mut fresh = Client::new(endpoint.clone());
    let e = fresh.request(&request("hangup", 1)).await.unwrap_err();
    assert!(matches!(e, RenderdError::Closed { .. }), "{e}");
    assert!(e.to_string().contains(&endpoint.to_string()), "{e}");

    let e = fresh.request(&request("garbage", 1)).await.unwrap_err();
    assert!(matches!(e, RenderdError::Protocol { .. }), "{e}");
    assert!(
        e.to_string().contains("unsupported protocol version"),
        "{e}"
    );
}

#[tokio::test]
async fn unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("renderd.sock");
    let accepted = fake_unix(&path);
    exercise(Endpoint::Unix(path), &accepted).await;
}

#[tokio::test]
async fn tcp() {
    let (endpoint, accepted) = fake_tcp().await;
    exercise(endpoint, &accepted).await;
}

#[tokio::test]
async fn connection_errors_name_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let e = Client::connect(Endpoint::Unix(path.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, RenderdError::Connect { .. }));
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    // A port nobody listens on (bound, then released).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut client = Client::new(Endpoint::parse(&format!("127.0.0.1:{port}")).unwrap());
    let e = client.request(&request("osm", 1)).await.unwrap_err();
    assert!(matches!(e, RenderdError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");

    let too_long = Request::new(
        Command::Render,
        Tile::new(1, 0, 0).unwrap(),
        &"s".repeat(41),
    );
    let e = client.request(&too_long).await.unwrap_err();
    assert!(matches!(e, RenderdError::Encode { .. }), "{e}");
}
