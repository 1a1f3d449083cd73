//! Varlink envelopes: the outer JSON objects around calls and replies.
//!
//! ```text
//! call:   {"method": "<interface>.<Method>", "parameters": {..}?, "oneway": bool?, "more": bool?, "upgrade": bool?}
//! reply:  {"parameters": {..}, "continues": bool?}
//! error:  {"error": "<interface>.<Error>", "parameters": {..}}
//! ```
//!
//! Calls are parsed strictly: anything but those keys, or a key of the wrong type, is an [`EnvelopeError`]. A
//! missing `parameters` means `{}`; a flag that is absent (or `null`) is false. Replies are parsed leniently
//! enough for forward compatibility (unknown top-level keys are ignored) because the client must keep working
//! against a newer daemon.

use serde_json::{Map, Value};

use super::error::NtmsError;
use super::frame;

/// Why a message is not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The message is not JSON.
    #[error("Malformed JSON at line {line} column {column}")]
    Json {
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
    },
    /// The JSON value is not an object.
    #[error("Message is not a JSON object")]
    NotAnObject,
    /// A call has no `method` key.
    #[error("Call has no method")]
    MissingMethod,
    /// `method` is not a string.
    #[error("Method is not a string")]
    MethodNotString,
    /// `parameters` is not an object.
    #[error("Parameters are not an object")]
    ParametersNotObject,
    /// `oneway`, `more`, `upgrade` or `continues` is not a boolean.
    #[error("Flag '{key}' is not a boolean")]
    FlagNotBool {
        /// The offending key.
        key: String,
    },
    /// A call carries a top-level key Varlink does not define.
    #[error("Unknown key '{key}'")]
    UnknownKey {
        /// The offending key.
        key: String,
    },
    /// An error reply's `error` is not a string.
    #[error("Error name is not a string")]
    ErrorNotString,
}

impl From<EnvelopeError> for NtmsError {
    /// A bad envelope is answered with `InvalidMessage` (and the connection closed).
    fn from(e: EnvelopeError) -> NtmsError {
        NtmsError::InvalidMessage { message: e.to_string() }
    }
}

impl From<frame::FrameError> for NtmsError {
    /// An oversized message is `MessageTooLarge`; invalid UTF-8 is `InvalidMessage`.
    fn from(e: frame::FrameError) -> NtmsError {
        match e {
            frame::FrameError::TooLarge { .. } => NtmsError::MessageTooLarge { message: e.to_string() },
            frame::FrameError::InvalidUtf8 { .. } => NtmsError::InvalidMessage { message: e.to_string() },
        }
    }
}

fn parse_object(message: &str) -> Result<Map<String, Value>, EnvelopeError> {
    match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(EnvelopeError::NotAnObject),
        Err(e) => Err(EnvelopeError::Json { line: e.line(), column: e.column() }),
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> Result<bool, EnvelopeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(EnvelopeError::FlagNotBool { key: key.to_owned() }),
    }
}

fn parameters(map: &mut Map<String, Value>) -> Result<Map<String, Value>, EnvelopeError> {
    match map.remove("parameters") {
        None => Ok(Map::new()),
        Some(Value::Object(p)) => Ok(p),
        Some(_) => Err(EnvelopeError::ParametersNotObject),
    }
}

/// One method call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Fully qualified method name, `<interface>.<Method>`.
    pub method: String,
    /// The call's parameters.
    pub parameters: Map<String, Value>,
    /// The caller wants no reply.
    pub oneway: bool,
    /// The caller accepts several replies (`continues`).
    pub more: bool,
    /// The caller wants to switch protocols after the reply (rsmd supports no upgrades).
    pub upgrade: bool,
}

impl Call {
    /// A plain call (no flags).
    pub fn new(method: impl Into<String>, parameters: Map<String, Value>) -> Call {
        Call { method: method.into(), parameters, oneway: false, more: false, upgrade: false }
    }

    /// Parses one framed message strictly.
    pub fn parse(message: &str) -> Result<Call, EnvelopeError> {
        let mut map = parse_object(message)?;
        if let Some(key) =
            map.keys().find(|k| !matches!(k.as_str(), "method" | "parameters" | "oneway" | "more" | "upgrade"))
        {
            return Err(EnvelopeError::UnknownKey { key: key.clone() });
        }
        let method = match map.remove("method") {
            None => return Err(EnvelopeError::MissingMethod),
            Some(Value::String(s)) => s,
            Some(_) => return Err(EnvelopeError::MethodNotString),
        };
        let parameters = parameters(&mut map)?;
        Ok(Call {
            method,
            parameters,
            oneway: flag(&map, "oneway")?,
            more: flag(&map, "more")?,
            upgrade: flag(&map, "upgrade")?,
        })
    }

    /// The call as a JSON object; false flags are left out.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("method".into(), Value::String(self.method.clone()));
        map.insert("parameters".into(), Value::Object(self.parameters.clone()));
        for (key, set) in [("oneway", self.oneway), ("more", self.more), ("upgrade", self.upgrade)] {
            if set {
                map.insert(key.into(), Value::Bool(true));
            }
        }
        Value::Object(map)
    }

    /// The framed call, NUL included.
    pub fn encode(&self) -> Vec<u8> {
        frame::encode(&self.to_value())
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// The reply's parameters.
    pub parameters: Map<String, Value>,
    /// More replies follow (only for calls with `more`).
    pub continues: bool,
}

impl Reply {
    /// A final reply.
    pub fn new(parameters: Map<String, Value>) -> Reply {
        Reply { parameters, continues: false }
    }

    /// A final reply whose parameters are `value` serialised (one of the reply structs of
    /// [`super::types`]). A value that does not serialise to a JSON object is an `Internal` error.
    pub fn from_serialize<T: serde::Serialize>(value: &T) -> Result<Reply, NtmsError> {
        match serde_json::to_value(value) {
            Ok(Value::Object(parameters)) => Ok(Reply::new(parameters)),
            Ok(_) => Err(NtmsError::Internal { message: "reply parameters are not an object".into() }),
            Err(e) => Err(NtmsError::Internal { message: format!("cannot serialise reply: {e}") }),
        }
    }

    /// The reply as a JSON object; `continues` only when true.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("parameters".into(), Value::Object(self.parameters.clone()));
        if self.continues {
            map.insert("continues".into(), Value::Bool(true));
        }
        Value::Object(map)
    }

    /// The framed reply, NUL included: the same bytes as `frame::encode(&self.to_value())`, written straight from
    /// the parameters (no copy of them into a JSON tree: this runs for every reply).
    pub fn encode(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            // In the order the JSON tree prints its keys (sorted).
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            continues: bool,
            parameters: &'a Map<String, Value>,
        }
        to_frame(&Wire { continues: self.continues, parameters: &self.parameters })
    }
}

/// A final reply whose parameters are `parameters` serialised (a reply struct of [`super::types`]), framed: the
/// reply [`Reply::encode`] would frame, without a JSON tree in between. None when it does not serialise to an
/// object.
pub fn encode_parameters<T: serde::Serialize>(parameters: &T) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(512);
    bytes.extend_from_slice(b"{\"parameters\":");
    serde_json::to_writer(&mut bytes, parameters).ok()?;
    if bytes.get(14) != Some(&b'{') {
        return None;
    }
    bytes.extend_from_slice(b"}\0");
    Some(bytes)
}

/// `value` as a frame: its JSON and the NUL. The wire structs here hold only strings, bools and JSON values, which
/// always serialise.
fn to_frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(0);
    bytes
}

/// An error reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    /// The fully qualified error name.
    pub error: String,
    /// The error's parameters.
    pub parameters: Map<String, Value>,
}

impl ErrorReply {
    /// The error reply as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("error".into(), Value::String(self.error.clone()));
        map.insert("parameters".into(), Value::Object(self.parameters.clone()));
        Value::Object(map)
    }

    /// The framed error reply, NUL included.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            error: &'a str,
            parameters: &'a Map<String, Value>,
        }
        to_frame(&Wire { error: &self.error, parameters: &self.parameters })
    }
}

/// What a client receives for a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A successful reply.
    Reply(Reply),
    /// An error reply.
    Error(ErrorReply),
}

impl Response {
    /// Parses one framed message received by a client. An object with an `error` key is an error reply.
    pub fn parse(message: &str) -> Result<Response, EnvelopeError> {
        let mut map = parse_object(message)?;
        let parameters = parameters(&mut map)?;
        match map.remove("error") {
            None | Some(Value::Null) => Ok(Response::Reply(Reply { parameters, continues: flag(&map, "continues")? })),
            Some(Value::String(error)) => Ok(Response::Error(ErrorReply { error, parameters })),
            Some(_) => Err(EnvelopeError::ErrorNotString),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A lookup's reply written straight from its struct says what the same reply through a JSON tree says; what
    /// is not an object is refused.
    #[test]
    fn parameters_framed_directly_match_the_reply_through_a_tree() {
        #[derive(serde::Serialize)]
        struct P {
            object: &'static str,
            count: u32,
            nested: Vec<Option<bool>>,
        }
        let p = P { object: "a\"b", count: 7, nested: vec![Some(true), None] };
        let direct = encode_parameters(&p).unwrap();
        let tree = Reply::from_serialize(&p).unwrap().encode();
        let parse = |b: &[u8]| Response::parse(std::str::from_utf8(b.strip_suffix(&[0]).unwrap()).unwrap()).unwrap();
        assert_eq!(parse(&direct), parse(&tree));
        assert_eq!(direct.last(), Some(&0));
        assert_eq!(encode_parameters(&5u32), None);
        assert_eq!(encode_parameters(&"text"), None);
    }

    #[test]
    fn parses_full_call() {
        let c = Call::parse(r#"{"method":"io.rsmd.Ntms.WaitForNotification","parameters":{"session":"s"},"more":true,"oneway":false,"upgrade":null}"#).unwrap();
        assert_eq!(c.method, "io.rsmd.Ntms.WaitForNotification");
        assert_eq!(c.parameters["session"], "s");
        assert!(c.more);
        assert!(!c.oneway);
        assert!(!c.upgrade);
    }

    #[test]
    fn parameters_default_to_empty() {
        let c = Call::parse(r#"{"method":"org.varlink.service.GetInfo"}"#).unwrap();
        assert!(c.parameters.is_empty());
        assert_eq!(c, Call::new("org.varlink.service.GetInfo", Map::new()));
    }

    #[test]
    fn call_errors() {
        let cases = [
            ("{", EnvelopeError::Json { line: 1, column: 1 }),
            ("", EnvelopeError::Json { line: 1, column: 0 }),
            ("[1]", EnvelopeError::NotAnObject),
            ("\"m\"", EnvelopeError::NotAnObject),
            ("{}", EnvelopeError::MissingMethod),
            (r#"{"method":3}"#, EnvelopeError::MethodNotString),
            (r#"{"method":null}"#, EnvelopeError::MethodNotString),
            (r#"{"method":"a.b.C","parameters":[]}"#, EnvelopeError::ParametersNotObject),
            (r#"{"method":"a.b.C","parameters":null}"#, EnvelopeError::ParametersNotObject),
            (r#"{"method":"a.b.C","more":"yes"}"#, EnvelopeError::FlagNotBool { key: "more".into() }),
            (r#"{"method":"a.b.C","oneway":1}"#, EnvelopeError::FlagNotBool { key: "oneway".into() }),
            (r#"{"method":"a.b.C","upgrade":{}}"#, EnvelopeError::FlagNotBool { key: "upgrade".into() }),
            (r#"{"method":"a.b.C","extra":1}"#, EnvelopeError::UnknownKey { key: "extra".into() }),
        ];
        for (text, want) in cases {
            assert_eq!(Call::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn call_round_trip() {
        let mut params = Map::new();
        params.insert("session".into(), json!("abc"));
        let mut c = Call::new("io.rsmd.Ntms.CloseSession", params);
        c.more = true;
        c.oneway = true;
        c.upgrade = true;
        let bytes = c.encode();
        let text = std::str::from_utf8(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(Call::parse(text).unwrap(), c);
        let plain = Call::new("a.b.C", Map::new()).to_value();
        assert_eq!(plain, json!({"method": "a.b.C", "parameters": {}}));
    }

    #[test]
    fn reply_serialisers() {
        let mut r = Reply::new(json!({"session": "x"}).as_object().unwrap().clone());
        assert_eq!(r.to_value(), json!({"parameters": {"session": "x"}}));
        r.continues = true;
        assert_eq!(r.to_value(), json!({"parameters": {"session": "x"}, "continues": true}));
        assert_eq!(r.encode().last(), Some(&0));
        let e = ErrorReply { error: "io.rsmd.Ntms.Busy".into(), parameters: Map::new() };
        assert_eq!(e.to_value(), json!({"error": "io.rsmd.Ntms.Busy", "parameters": {}}));
        assert_eq!(e.encode().last(), Some(&0));
        // The direct encoders write exactly what the JSON trees print (key order, escapes, `continues` only when
        // true), for nested and escaped values too.
        let p = json!({"z": [1, {"b": "é\u{1}\"q"}], "a": null, "m": {"y": 2.5, "x": true}});
        for continues in [false, true] {
            let r = Reply { parameters: p.as_object().unwrap().clone(), continues };
            assert_eq!(r.encode(), frame::encode(&r.to_value()));
        }
        let e = ErrorReply { error: "io.rsmd.Ntms.Busy".into(), parameters: p.as_object().unwrap().clone() };
        assert_eq!(e.encode(), frame::encode(&e.to_value()));
    }

    #[test]
    fn reply_from_serialize() {
        let r = Reply::from_serialize(&crate::proto::types::RequestReply { request: "r".into() }).unwrap();
        assert_eq!(r.to_value(), json!({"parameters": {"request": "r"}}));
        assert_eq!(Reply::from_serialize(&5).unwrap_err().code(), 1359);
    }

    #[test]
    fn response_parse() {
        assert_eq!(
            Response::parse(r#"{"parameters":{"a":1},"continues":true,"future":0}"#).unwrap(),
            Response::Reply(Reply { parameters: json!({"a": 1}).as_object().unwrap().clone(), continues: true })
        );
        assert_eq!(Response::parse(r#"{}"#).unwrap(), Response::Reply(Reply::default()));
        assert_eq!(
            Response::parse(r#"{"error":"x.y.Z"}"#).unwrap(),
            Response::Error(ErrorReply { error: "x.y.Z".into(), parameters: Map::new() })
        );
        assert_eq!(Response::parse(r#"{"error":5}"#), Err(EnvelopeError::ErrorNotString));
        assert_eq!(Response::parse(r#"{"parameters":1}"#), Err(EnvelopeError::ParametersNotObject));
        assert_eq!(
            Response::parse(r#"{"continues":"no"}"#),
            Err(EnvelopeError::FlagNotBool { key: "continues".into() })
        );
        assert_eq!(Response::parse("nul"), Err(EnvelopeError::Json { line: 1, column: 3 }));
        assert_eq!(Response::parse("[]"), Err(EnvelopeError::NotAnObject));
    }

    #[test]
    fn conversions_to_wire_errors() {
        assert_eq!(NtmsError::from(EnvelopeError::NotAnObject).code(), 13);
        assert_eq!(NtmsError::from(frame::FrameError::TooLarge { limit: 1 }).code(), 4336);
        assert_eq!(NtmsError::from(frame::FrameError::InvalidUtf8 { offset: 0 }).code(), 13);
    }
}
