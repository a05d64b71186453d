//! Maelstrom's error codes and the error a handler returns when it cannot
//! answer a request normally.
//!
//! Handlers never write error replies themselves: they return a
//! [`RequestError`] and the node turns it into an `error` body, so every error
//! on the wire has the same shape.

use serde::Serialize;
use std::fmt;

/// The subset of Maelstrom's error codes that grace uses.
///
/// The numbers are Maelstrom's, so a harness that knows them can tell a
/// retryable condition (11) from a bug in the request (10, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u16")]
pub enum ErrorCode {
    /// The message type is not one grace knows.
    NotSupported,
    /// Neither the service nor the fallback cache could answer; try later.
    TemporarilyUnavailable,
    /// The request is missing a field, or a field has the wrong type or value.
    MalformedRequest,
    /// The service answered definitively that the record does not exist.
    KeyDoesNotExist,
}

impl ErrorCode {
    /// The numeric code Maelstrom assigns to this error.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::NotSupported => 10,
            ErrorCode::TemporarilyUnavailable => 11,
            ErrorCode::MalformedRequest => 12,
            ErrorCode::KeyDoesNotExist => 20,
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.code()
    }
}

/// Why a request could not be answered with its normal reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub text: String,
}

impl RequestError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        RequestError {
            code,
            text: text.into(),
        }
    }

    /// A malformed-request error (code 12) whose text names the offending field.
    pub fn malformed(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::MalformedRequest, text)
    }

    /// A not-supported error (code 10) for a message type grace does not know.
    pub fn not_supported(kind: &str) -> Self {
        Self::new(
            ErrorCode::NotSupported,
            format!("message type {kind:?} is not supported"),
        )
    }

    /// A temporarily-unavailable error (code 11): no live answer and no copy.
    pub fn unavailable(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::TemporarilyUnavailable, text)
    }

    /// A key-does-not-exist error (code 20).
    pub fn not_found(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::KeyDoesNotExist, text)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code.code(), self.text)
    }
}
