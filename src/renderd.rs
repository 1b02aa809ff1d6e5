//! renderd's wire protocol and a client for it.
//!
//! mod_tile, renderd and the `render_*` utilities exchange fixed-size
//! messages (`struct protocol` in mod_tile's `includes/protocol.h`), in the
//! host's byte order, which is little-endian everywhere renderd runs:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | version: 1, 2 or 3 |
//! | 4 | 4 | command ([`Command`]) |
//! | 8, 12, 16 | 4 each | x, y, z |
//! | 20 | 41 | style (`xmlname`), NUL-terminated — v2, v3 |
//! | 61 | 41 | MIME type — v3 |
//! | 102 | 41 | options (parameterised styles) — v3 |
//!
//! Messages are 20 (v1), 64 (v2: 61 padded to 4) or 144 (v3: 143 padded)
//! bytes. A reply is the request with only the command changed. The codec
//! ([`Request::encode`], [`Request::decode`], [`read_message`],
//! [`write_message`]) serves both sides; [`Client`] is the requesting side.

use crate::tile::{Metatile, Tile};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes every version starts with: version, command, x, y, z.
pub const PREFIX_LEN: usize = 20;
/// Size of each string field, NUL included.
pub const NAME_FIELD_LEN: usize = 41;
/// Longest string a field holds.
pub const MAX_NAME_LEN: usize = NAME_FIELD_LEN - 1;
/// Style of v1 requests, which carry none.
pub const DEFAULT_STYLE: &str = "default";
/// MIME type of v1 and v2 requests, which carry none.
pub const DEFAULT_MIMETYPE: &str = "image/png";
/// renderd's Unix socket unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/renderd/renderd.sock";
/// Port of `host` endpoints given without one (the `render_*` utilities').
pub const DEFAULT_TCP_PORT: u16 = 7654;

const STYLE_AT: usize = PREFIX_LEN;
const MIMETYPE_AT: usize = STYLE_AT + NAME_FIELD_LEN;
const OPTIONS_AT: usize = MIMETYPE_AT + NAME_FIELD_LEN;

/// A protocol command. Requests carry `Render*` or `Dirty`; replies carry
/// `Done`, `NotDone` or `Ignore`. Unknown codes are kept, so a server can
/// answer them with `NotDone` as renderd does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `cmdIgnore`: the reply to a tile outside the style's zoom or extent.
    Ignore,
    /// `cmdRender`: normal render (mod_tile for very old tiles).
    Render,
    /// `cmdDirty`: put in the dirty queue; answered `NotDone` at once.
    Dirty,
    /// `cmdDone`: rendered and stored.
    Done,
    /// `cmdNotDone`: failed, or queued as dirty without an answer to come.
    NotDone,
    /// `cmdRenderPrio`: missing tile someone waits for.
    RenderPrio,
    /// `cmdRenderBulk`: batch work (render_list, render_expired).
    RenderBulk,
    /// `cmdRenderLow`: old tile someone waits for.
    RenderLow,
    /// Any other code.
    Unknown(i32),
}

impl Command {
    /// The `enum protoCmd` value on the wire.
    pub fn code(self) -> i32 {
        match self {
            Command::Ignore => 0,
            Command::Render => 1,
            Command::Dirty => 2,
            Command::Done => 3,
            Command::NotDone => 4,
            Command::RenderPrio => 5,
            Command::RenderBulk => 6,
            Command::RenderLow => 7,
            Command::Unknown(code) => code,
        }
    }

    /// The command for a wire value; unknown ones are kept as
    /// [`Command::Unknown`].
    pub fn from_code(code: i32) -> Command {
        match code {
            0 => Command::Ignore,
            1 => Command::Render,
            2 => Command::Dirty,
            3 => Command::Done,
            4 => Command::NotDone,
            5 => Command::RenderPrio,
            6 => Command::RenderBulk,
            7 => Command::RenderLow,
            code => Command::Unknown(code),
        }
    }

    /// The commands renderd accepts as requests.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Command::Render
                | Command::Dirty
                | Command::RenderPrio
                | Command::RenderBulk
                | Command::RenderLow
        )
    }
}

impl fmt::Display for Command {
    /// mod_tile's names (`cmdRenderBulk`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Command::Ignore => "cmdIgnore",
            Command::Render => "cmdRender",
            Command::Dirty => "cmdDirty",
            Command::Done => "cmdDone",
            Command::NotDone => "cmdNotDone",
            Command::RenderPrio => "cmdRenderPrio",
            Command::RenderBulk => "cmdRenderBulk",
            Command::RenderLow => "cmdRenderLow",
            Command::Unknown(code) => return write!(f, "command {code}"),
        };
        f.write_str(name)
    }
}

/// Protocol version; it fixes the message size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// x, y, z only (style `default`).
    V1,
    /// Adds the style: what mod_tile and the `render_*` utilities send.
    V2,
    /// Adds MIME type and options: parameterised styles, renderd forwarding.
    V3,
}

impl ProtocolVersion {
    /// The `ver` field on the wire: 1, 2 or 3.
    pub fn code(self) -> i32 {
        match self {
            ProtocolVersion::V1 => 1,
            ProtocolVersion::V2 => 2,
            ProtocolVersion::V3 => 3,
        }
    }

    /// The version for a `ver` field; `None` for any other value.
    pub fn from_code(code: i32) -> Option<ProtocolVersion> {
        match code {
            1 => Some(ProtocolVersion::V1),
            2 => Some(ProtocolVersion::V2),
            3 => Some(ProtocolVersion::V3),
            _ => None,
        }
    }

    /// Bytes of one message: 20, 64 or 144.
    pub fn message_len(self) -> usize {
        match self {
            ProtocolVersion::V1 => PREFIX_LEN,
            ProtocolVersion::V2 => 64,
            ProtocolVersion::V3 => 144,
        }
    }

    /// The version of a message from its first 4 bytes.
    pub fn of_message(prefix: &[u8]) -> Result<ProtocolVersion, ProtocolError> {
        let Some(bytes) = prefix.get(..4) else {
            return Err(ProtocolError::Short {
                expected: 4,
                got: prefix.len(),
            });
        };
        let code = i32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        ProtocolVersion::from_code(code).ok_or(ProtocolError::Version(code))
    }
}

/// Invalid bytes, or a request that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Fewer bytes than the version field or the prefix needs.
    #[error("message too short: {got} bytes, expected {expected}")]
    Short {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The bytes given do not match the size of their version's message.
    #[error("message of {got} bytes, but a version {version} message has {expected}")]
    Length {
        /// The message's `ver` field.
        version: i32,
        /// Bytes of a message of that version.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The `ver` field given, not 1, 2 or 3.
    #[error("unsupported protocol version {0} (renderd speaks 1, 2 and 3)")]
    Version(i32),
    /// A string field that cannot be decoded or encoded.
    #[error("{field} field: {reason}")]
    Field {
        /// `style`, `mimetype` or `options`.
        field: &'static str,
        /// What is wrong with it (too long, NUL, not UTF-8, unterminated).
        reason: String,
    },
}

/// One message: a request, or the reply echoing it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// Which of the three message layouts, and so its size.
    pub version: ProtocolVersion,
    /// What is asked, or the answer.
    pub command: Command,
    /// As on the wire (`int32`): any tile of the metatile, not necessarily
    /// its origin; replies echo it unchanged.
    pub x: i32,
    /// The tile's row, as on the wire like `x`.
    pub y: i32,
    /// The zoom, as on the wire; not checked against the world.
    pub z: i32,
    /// At most 40 bytes, no NUL. Not sent in v1 (which means `default`).
    pub style: String,
    /// v3 only; v1 and v2 mean `image/png`.
    pub mimetype: String,
    /// v3 only: the parameterisation (e.g. languages `en,de,_`).
    pub options: String,
}

impl Request {
    /// A v2 request for a tile, as mod_tile and the `render_*` utilities
    /// send them.
    pub fn new(command: Command, tile: Tile, style: &str) -> Request {
        Request {
            version: ProtocolVersion::V2,
            command,
            x: tile.x as i32,
            y: tile.y as i32,
            z: i32::from(tile.z),
            style: style.to_string(),
            mimetype: DEFAULT_MIMETYPE.to_string(),
            options: String::new(),
        }
    }

    /// A v2 request naming a metatile by its origin.
    pub fn for_metatile(command: Command, metatile: Metatile, style: &str) -> Request {
        let origin = Tile {
            z: metatile.z,
            x: metatile.x,
            y: metatile.y,
        };
        Request::new(command, origin, style)
    }

    /// The same request as v3 with a MIME type and options.
    pub fn with_v3_fields(mut self, mimetype: &str, options: &str) -> Request {
        self.version = ProtocolVersion::V3;
        self.mimetype = mimetype.to_string();
        self.options = options.to_string();
        self
    }

    /// The tile asked for, if the coordinates are a valid tile.
    pub fn tile(&self) -> Option<Tile> {
        let z = u8::try_from(self.z).ok()?;
        Tile::new(z, u32::try_from(self.x).ok()?, u32::try_from(self.y).ok()?).ok()
    }

    /// The reply renderd sends: everything echoed, only the command set.
    pub fn reply(&self, command: Command) -> Request {
        Request {
            command,
            ..self.clone()
        }
    }

    /// Whether `reply` answers this request: same x, y, z and style (what
    /// mod_tile checks; renderd may answer out of order on one connection).
    pub fn is_answered_by(&self, reply: &Request) -> bool {
        reply.x == self.x && reply.y == self.y && reply.z == self.z && reply.style == self.style
    }

    /// The message bytes: [`ProtocolVersion::message_len`] of them, padding
    /// zeroed. Fields a version does not carry are left out.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut bytes = vec![0u8; self.version.message_len()];
        for (at, value) in [
            (0, self.version.code()),
            (4, self.command.code()),
            (8, self.x),
            (12, self.y),
            (16, self.z),
        ] {
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        if self.version >= ProtocolVersion::V2 {
            put_field(&mut bytes[STYLE_AT..], "style", &self.style)?;
        }
        if self.version >= ProtocolVersion::V3 {
            put_field(&mut bytes[MIMETYPE_AT..], "mimetype", &self.mimetype)?;
            put_field(&mut bytes[OPTIONS_AT..], "options", &self.options)?;
        }
        Ok(bytes)
    }

    /// Decodes one whole message (exactly its version's size). Fields the
    /// version lacks get renderd's defaults: style `default` for v1, MIME
    /// type `image/png` and no options for v1 and v2. Padding is ignored
    /// (renderd 0.6.1 leaves bytes of its v3 buffer in a v2 reply's padding).
    pub fn decode(bytes: &[u8]) -> Result<Request, ProtocolError> {
        if bytes.len() < PREFIX_LEN {
            return Err(ProtocolError::Short {
                expected: PREFIX_LEN,
                got: bytes.len(),
            });
        }
        let version = ProtocolVersion::of_message(bytes)?;
        if bytes.len() != version.message_len() {
            return Err(ProtocolError::Length {
                version: version.code(),
                expected: version.message_len(),
                got: bytes.len(),
            });
        }
        let int = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let field = |at: usize, name| get_field(&bytes[at..at + NAME_FIELD_LEN], name);
        let style = match version {
            ProtocolVersion::V1 => DEFAULT_STYLE.to_string(),
            _ => field(STYLE_AT, "style")?,
        };
        let (mimetype, options) = match version {
            ProtocolVersion::V3 => (
                field(MIMETYPE_AT, "mimetype")?,
                field(OPTIONS_AT, "options")?,
            ),
            _ => (DEFAULT_MIMETYPE.to_string(), String::new()),
        };
        Ok(Request {
            version,
            command: Command::from_code(int(4)),
            x: int(8),
            y: int(12),
            z: int(16),
            style,
            mimetype,
            options,
        })
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}/{} style {:?} (v{})",
            self.command,
            self.z,
            self.x,
            self.y,
            self.style,
            self.version.code()
        )?;
        if !self.options.is_empty() {
            write!(f, " options {:?}", self.options)?;
        }
        Ok(())
    }
}

fn put_field(field: &mut [u8], name: &'static str, value: &str) -> Result<(), ProtocolError> {
    if value.len() > MAX_NAME_LEN {
        return Err(ProtocolError::Field {
            field: name,
            reason: format!("{value:?} is longer than {MAX_NAME_LEN} bytes"),
        });
    }
    if value.contains('\0') {
        return Err(ProtocolError::Field {
            field: name,
            reason: format!("{value:?} contains a NUL byte"),
        });
    }
    field[..value.len()].copy_from_slice(value.as_bytes());
    Ok(())
}

fn get_field(field: &[u8], name: &'static str) -> Result<String, ProtocolError> {
    let Some(end) = field.iter().position(|&b| b == 0) else {
        return Err(ProtocolError::Field {
            field: name,
            reason: format!("not NUL-terminated within {NAME_FIELD_LEN} bytes"),
        });
    };
    String::from_utf8(field[..end].to_vec()).map_err(|_| ProtocolError::Field {
        field: name,
        reason: format!("not UTF-8: {:?}", field[..end].escape_ascii().to_string()),
    })
}

/// Why reading a message from a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The stream ended inside a message.
    #[error("connection closed after {got} of {expected} bytes of a message")]
    Truncated {
        /// Bytes of the message (or of the prefix, while reading that).
        expected: usize,
        /// Bytes read before the end.
        got: usize,
    },
    /// The bytes read are not a valid message.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Reads one message: the 20-byte prefix, then the rest its version needs,
/// however the bytes arrive. `None` when the stream ends cleanly between
/// messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Request>, ReadError> {
    let mut bytes = vec![0u8; PREFIX_LEN];
    let got = read_full(reader, &mut bytes).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < PREFIX_LEN {
        return Err(ReadError::Truncated {
            expected: PREFIX_LEN,
            got,
        });
    }
    let version = ProtocolVersion::of_message(&bytes)?;
    let expected = version.message_len();
    bytes.resize(expected, 0);
    let got = PREFIX_LEN + read_full(reader, &mut bytes[PREFIX_LEN..]).await?;
    if got < expected {
        return Err(ReadError::Truncated { expected, got });
    }
    Ok(Some(Request::decode(&bytes)?))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes one message.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Request,
) -> io::Result<()> {
    let bytes = message
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    writer.write_all(&bytes).await?;
    writer.flush().await
}

/// Where renderd listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A Unix socket (renderd.conf's `socketname`).
    Unix(PathBuf),
    /// A TCP address (renderd.conf's `iphostname` and `ipport`).
    Tcp {
        /// Host name or IP address, without brackets.
        host: String,
        /// TCP port.
        port: u16,
    },
}

impl Endpoint {
    /// Parses what the `render_*` utilities take for `--socket`: a path
    /// starting with `/` is a Unix socket, anything else `host[:port]`
    /// (port 7654 by default; IPv6 addresses in brackets).
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if text.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(text)));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: missing ']' after an IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("{text:?}: expected ':port' after ']'")),
                },
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(format!("{text:?}: put IPv6 addresses in brackets")),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?}: empty host name"));
        }
        let port = match port {
            None => DEFAULT_TCP_PORT,
            Some(port) => port
                .parse()
                .map_err(|_| format!("{text:?}: invalid port {port:?}"))?,
        };
        Ok(Endpoint::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        Endpoint::parse(text)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a [`Client`] request did not get its reply. `request` fields are
/// the request as [`Request`]'s `Display` shows it.
#[derive(Debug, thiserror::Error)]
pub enum RenderdError {
    /// The connection was refused or failed.
    #[error("cannot connect to renderd at {endpoint}: {source}")]
    Connect {
        /// Where the client connects.
        endpoint: Endpoint,
        /// What the system said.
        source: io::Error,
    },
    /// The connection was not made within the connect timeout.
    #[error("connecting to renderd at {endpoint} timed out after {after:?}")]
    ConnectTimeout {
        /// Where the client connects.
        endpoint: Endpoint,
        /// The connect timeout.
        after: Duration,
    },
    /// Sending or receiving failed.
    #[error("renderd at {endpoint}: {source} (request {request})")]
    Io {
        /// Where the client connects.
        endpoint: Endpoint,
        /// The request in flight.
        request: String,
        /// What the system said.
        source: io::Error,
    },
    /// renderd closed the connection with the request unanswered.
    #[error("renderd at {endpoint} closed the connection before answering {request}")]
    Closed {
        /// Where the client connects.
        endpoint: Endpoint,
        /// The request unanswered.
        request: String,
    },
    /// No reply within the reply timeout.
    #[error("renderd at {endpoint} did not answer {request} within {after:?}")]
    Timeout {
        /// Where the client connects.
        endpoint: Endpoint,
        /// The request unanswered.
        request: String,
        /// The reply timeout.
        after: Duration,
    },
    /// renderd's reply is not a valid message.
    #[error("renderd at {endpoint} sent an invalid message: {source}")]
    Protocol {
        /// Where the client connects.
        endpoint: Endpoint,
        /// What is wrong with the reply.
        source: ReadError,
    },
    /// The request cannot be encoded (a field too long or with a NUL).
    #[error("cannot send {request}: {source}")]
    Encode {
        /// The request refused.
        request: String,
        /// What is wrong with it.
        source: ProtocolError,
    },
}

/// A byte stream to renderd, Unix or TCP.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A connection to renderd that sends requests and waits for their
/// replies, one at a time, like one worker of the `render_*` utilities.
///
/// The connection is reused for later requests. After an error or a
/// timeout it is dropped (a reply may still be on its way and would come
/// out of step) and the next request connects again. A request whose write
/// fails on a reused connection (renderd closed it meanwhile) is sent once
/// more on a new one.
pub struct Client {
    endpoint: Endpoint,
    connection: Option<Box<dyn Transport>>,
    reused: bool,
    connect_timeout: Duration,
    reply_timeout: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("connected", &self.connection.is_some())
            .field("reply_timeout", &self.reply_timeout)
            .finish()
    }
}

impl Client {
    /// How long [`Client::connect`] waits by default.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A client that connects on its first request; replies are awaited
    /// without limit until [`Client::with_reply_timeout`].
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            connection: None,
            reused: false,
            connect_timeout: Client::DEFAULT_CONNECT_TIMEOUT,
            reply_timeout: None,
        }
    }

    /// A client connected now, so an unreachable renderd shows at once.
    pub async fn connect(endpoint: Endpoint) -> Result<Client, RenderdError> {
        let mut client = Client::new(endpoint);
        client.ensure_connected().await?;
        Ok(client)
    }

    /// Limits the wait for each reply (sending included). Bulk renders of
    /// low zooms can take many minutes; `None` waits for ever, as the
    /// `render_*` utilities do.
    pub fn with_reply_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.reply_timeout = timeout;
        self
    }

    /// Limits each connection attempt (default
    /// [`Client::DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Client {
        self.connect_timeout = timeout;
        self
    }

    /// Where the client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether a connection is open for the next request.
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Sends `request` and returns the command of the reply that answers it
    /// (`Done`, `NotDone`, `Ignore`). Replies to other requests are skipped.
    pub async fn request(&mut self, request: &Request) -> Result<Command, RenderdError> {
        let bytes = request.encode().map_err(|source| RenderdError::Encode {
            request: request.to_string(),
            source,
        })?;
        let reply_timeout = self.reply_timeout;
        let endpoint = self.endpoint.clone();
        let exchange = self.exchange(request, &bytes);
        let result = match reply_timeout {
            None => exchange.await,
            Some(after) => match tokio::time::timeout(after, exchange).await {
                Ok(result) => result,
                Err(_) => Err(RenderdError::Timeout {
                    endpoint,
                    request: request.to_string(),
                    after,
                }),
            },
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn exchange(&mut self, request: &Request, bytes: &[u8]) -> Result<Command, RenderdError> {
        self.ensure_connected().await?;
        let reused = self.reused;
        self.reused = true;
        match self.attempt(request, bytes).await {
            // renderd may have closed an idle connection; a Unix socket
            // then fails the write, TCP usually only the read. Either way
            // nothing was answered, so sending again is safe (renderd merges
            // duplicates of queued metatiles).
            Err(RenderdError::Io { .. } | RenderdError::Closed { .. }) if reused => {
                tracing::debug!(
                    "renderd at {} dropped a reused connection; sending {request} again",
                    self.endpoint
                );
                self.connection = None;
                self.ensure_connected().await?;
                self.reused = true;
                self.attempt(request, bytes).await
            }
            result => result,
        }
    }

    async fn attempt(&mut self, request: &Request, bytes: &[u8]) -> Result<Command, RenderdError> {
        let endpoint = &self.endpoint;
        let io_error = |source| RenderdError::Io {
            endpoint: endpoint.clone(),
            request: request.to_string(),
            source,
        };
        let connection = self.connection.as_mut().expect("connected");
        connection.write_all(bytes).await.map_err(io_error)?;
        connection.flush().await.map_err(io_error)?;
        loop {
            match read_message(connection).await {
                Ok(Some(reply)) if request.is_answered_by(&reply) => return Ok(reply.command),
                Ok(Some(other)) => {
                    tracing::debug!(
                        "renderd at {endpoint}: skipping reply {other} while waiting for {request}"
                    );
                }
                Ok(None) => {
                    return Err(RenderdError::Closed {
                        endpoint: endpoint.clone(),
                        request: request.to_string(),
                    })
                }
                Err(ReadError::Io(source)) => return Err(io_error(source)),
                Err(source) => {
                    return Err(RenderdError::Protocol {
                        endpoint: endpoint.clone(),
                        source,
                    })
                }
            }
        }
    }

    async fn ensure_connected(&mut self) -> Result<(), RenderdError> {
        if self.connection.is_some() {
            return Ok(());
        }
        let connect = async {
            Ok::<Box<dyn Transport>, io::Error>(match &self.endpoint {
                Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
                Endpoint::Tcp { host, port } => {
                    let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    // One small message per request: do not wait to fill
                    // a segment.
                    stream.set_nodelay(true)?;
                    Box::new(stream)
                }
            })
        };
        let connection = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| RenderdError::ConnectTimeout {
                endpoint: self.endpoint.clone(),
                after: self.connect_timeout,
            })?
            .map_err(|source| RenderdError::Connect {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        self.connection = Some(connection);
        self.reused = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_at(bytes: &[u8], at: usize) -> i32 {
        i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn sample(version: ProtocolVersion) -> Request {
        let request = Request::new(
            Command::RenderBulk,
            Tile::new(18, 131010, 87170).unwrap(),
            "osm",
        );
        match version {
            ProtocolVersion::V1 => Request {
                version,
                style: DEFAULT_STYLE.into(),
                ..request
            },
            ProtocolVersion::V2 => request,
            ProtocolVersion::V3 => request.with_v3_fields("image/webp", "en,de,_"),
        }
    }

    #[test]
    fn v1_layout() {
        let bytes = sample(ProtocolVersion::V1).encode().unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(
            [0, 4, 8, 12, 16].map(|at| int_at(&bytes, at)),
            [1, 6, 131010, 87170, 18]
        );
        assert_eq!(
            Request::decode(&bytes).unwrap(),
            sample(ProtocolVersion::V1)
        );
    }

    #[test]
    fn v2_layout() {
        let bytes = sample(ProtocolVersion::V2).encode().unwrap();
        assert_eq!(bytes.len(), 64);
        assert_eq!(int_at(&bytes, 0), 2);
        assert_eq!(&bytes[20..24], b"osm\0");
        assert!(bytes[24..64].iter().all(|&b| b == 0));
        assert_eq!(
            Request::decode(&bytes).unwrap(),
            sample(ProtocolVersion::V2)
        );
    }

    #[test]
    fn v3_layout() {
        let bytes = sample(ProtocolVersion::V3).encode().unwrap();
        assert_eq!(bytes.len(), 144);
        assert_eq!(int_at(&bytes, 0), 3);
        assert_eq!(&bytes[20..24], b"osm\0");
        assert_eq!(&bytes[61..72], b"image/webp\0");
        assert_eq!(&bytes[102..110], b"en,de,_\0");
        assert_eq!(bytes[143], 0);
        assert_eq!(
            Request::decode(&bytes).unwrap(),
            sample(ProtocolVersion::V3)
        );
    }

    #[test]
    fn commands() {
        for code in 0..8 {
            assert_eq!(Command::from_code(code).code(), code);
        }
        assert_eq!(Command::from_code(42), Command::Unknown(42));
        assert_eq!(Command::RenderBulk.to_string(), "cmdRenderBulk");
        assert!(Command::Dirty.is_request() && !Command::Done.is_request());
    }

    #[test]
    fn endpoints() {
        let tcp = |host: &str, port| Endpoint::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(
            Endpoint::parse("/run/renderd/renderd.sock").unwrap(),
            Endpoint::Unix("/run/renderd/renderd.sock".into())
        );
        assert_eq!(Endpoint::parse("render1").unwrap(), tcp("render1", 7654));
        assert_eq!(
            Endpoint::parse("127.0.0.1:7655").unwrap(),
            tcp("127.0.0.1", 7655)
        );
        assert_eq!(Endpoint::parse("[::1]:7655").unwrap(), tcp("::1", 7655));
        assert_eq!(Endpoint::parse("[::1]").unwrap(), tcp("::1", 7654));
        assert_eq!(tcp("::1", 1).to_string(), "[::1]:1");
        for bad in ["", ":7654", "host:port", "::1", "[::1", "[::1]x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
