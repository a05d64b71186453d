//! `grace-floor`: the speed floor that `grace` is measured against.
//!
//! It does the work no Maelstrom node can skip — read a line, parse the JSON
//! envelope, serialize a reply of the same shape as grace's, write it — and
//! nothing else: no circuit breaker, no cache, no modes, no queue. Its
//! throughput is what the throughput bench (`benches/throughput.rs`) compares
//! grace with, so the difference between the two is the cost of grace's logic.
//!
//! The reply values are fixed; only the keys and the envelope match grace.

use std::io::{self, BufRead, BufWriter, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request as Maelstrom sends it; the body stays untyped, as grace reads it.
#[derive(Deserialize)]
struct Request {
    src: String,
    dest: String,
    body: Value,
}

/// A reply: addressed back to the sender, from the node the request was for.
#[derive(Serialize)]
struct Reply<'a> {
    src: &'a str,
    dest: &'a str,
    body: ReplyBody<'a>,
}

/// One variant per reply type, with grace's keys in grace's order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ReplyBody<'a> {
    UserResponse {
        in_reply_to: &'a Value,
        user: Record<'a>,
        circuit_state: &'static str,
        from_cache: bool,
    },
    ProductResponse {
        in_reply_to: &'a Value,
        product: Record<'a>,
        #[serde(rename = "_cached")]
        cached: bool,
    },
    ModeChanged {
        in_reply_to: &'a Value,
        mode: &'a str,
        disabled_features: &'static [&'static str],
    },
    OrderResponse {
        in_reply_to: &'a Value,
        status: &'static str,
        queued: bool,
        queue_position: u64,
    },
    Error {
        in_reply_to: &'a Value,
        code: u32,
        text: &'static str,
    },
}

/// A user or product record, echoing the requested id.
#[derive(Serialize)]
struct Record<'a> {
    id: &'a Value,
    name: &'static str,
}

/// Builds the reply body for `body`, looking only at the keys the reply echoes.
fn reply_body(body: &Value) -> ReplyBody<'_> {
    let field = |key: &str| body.get(key).unwrap_or(&Value::Null);
    let in_reply_to = field("msg_id");
    match field("type").as_str().unwrap_or_default() {
        "get_user" => ReplyBody::UserResponse {
            in_reply_to,
            user: Record {
                id: field("user_id"),
                name: "John Doe",
            },
            circuit_state: "closed",
            from_cache: false,
        },
        "get_product" => ReplyBody::ProductResponse {
            in_reply_to,
            product: Record {
                id: field("product_id"),
                name: "Product",
            },
            cached: false,
        },
        "set_mode" => ReplyBody::ModeChanged {
            in_reply_to,
            mode: field("mode").as_str().unwrap_or("normal"),
            disabled_features: &["recommendations", "search"],
        },
        "create_order" => ReplyBody::OrderResponse {
            in_reply_to,
            status: "queued",
            queued: true,
            queue_position: 1,
        },
        _ => ReplyBody::Error {
            in_reply_to,
            code: 10,
            text: "not supported",
        },
    }
}

fn main() -> io::Result<()> {
    let mut input = io::stdin().lock();
    let mut output = BufWriter::new(io::stdout().lock());
    let mut line = String::new();
    let mut line_number = 0u64;
    while input.read_line(&mut line)? > 0 {
        line_number += 1;
        if !line.trim().is_empty() {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => {
                    let reply = Reply {
                        src: &request.dest,
                        dest: &request.src,
                        body: reply_body(&request.body),
                    };
                    serde_json::to_writer(&mut output, &reply)?;
                    output.write_all(b"\n")?;
                }
                Err(error) => eprintln!("line {line_number}: {error}"),
            }
        }
        line.clear();
    }
    output.flush()
}
