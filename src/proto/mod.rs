//! The Varlink wire format of rsmd: framing, envelopes, the interface definition, the method set, the wire objects
//! and the closed error vocabulary. No I/O and no clock: the server and the client feed it bytes and get values.
//!
//! A call travels `bytes → frame::FrameDecoder → envelope::Call::parse → method::Method::parse`; an answer goes
//! `types::* → envelope::Reply (or error::WireError::to_reply) → frame::encode → bytes`.

pub mod envelope;
pub mod error;
pub mod frame;
pub mod interface;
pub mod method;
pub mod names;
pub mod types;

pub use envelope::{Call, EnvelopeError, ErrorReply, Reply, Response};
pub use error::{NtmsError, VarlinkError, WireError};
pub use frame::{encode, FrameDecoder, FrameError, MAX_MESSAGE};
pub use interface::PROTOCOL_VERSION;
pub use method::{DismountTarget, Method};
pub use names::{NTMS_INTERFACE, SERVICE_INTERFACE};
pub use types::{ObjectDetails, ObjectInfo, ObjectType};
