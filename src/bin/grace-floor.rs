//! `grace-floor`: the speed floor `grace` is measured against.
//!
//! It does the work no JSON-lines node can skip, and nothing else: read a
//! line, parse the envelope with serde_json (borrowing what it can), write
//! a `user_response`-shaped reply, flush whenever stdin has nothing more
//! buffered. No breaker, cache, modes or queue. It is as lean as the floor
//! in `../shared/floor/` that grace's throughput is quoted against (same
//! parse, same reply, same flushing; the throughput bench runs both when
//! that one is there), so the difference between grace and it is the cost
//! of grace's logic.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

/// Bytes read, and written, at a time.
const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    src: &'a str,
    #[serde(borrow)]
    dest: &'a str,
    #[serde(borrow)]
    body: Body<'a>,
}

/// Only what the reply echoes.
#[derive(Deserialize)]
struct Body<'a> {
    msg_id: Option<u64>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    product_id: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Reply<'a> {
    src: &'a str,
    dest: &'a str,
    body: UserResponse<'a>,
}

#[derive(Serialize)]
struct UserResponse<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: Option<u64>,
    user: User<'a>,
    circuit_state: &'static str,
    from_cache: bool,
}

#[derive(Serialize)]
struct User<'a> {
    id: &'a RawValue,
    name: &'static str,
}

fn main() -> io::Result<()> {
    let mut input = BufReader::with_capacity(BUFFER_BYTES, io::stdin().lock());
    let mut output = BufWriter::with_capacity(BUFFER_BYTES, io::stdout().lock());
    let null = RawValue::from_string("null".into()).expect("null is JSON");
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        if let Ok(request) = serde_json::from_str::<Request>(&line) {
            let body = request.body;
            let reply = Reply {
                src: request.dest,
                dest: request.src,
                body: UserResponse {
                    kind: "user_response",
                    in_reply_to: body.msg_id,
                    user: User {
                        id: body.user_id.or(body.product_id).unwrap_or(&null),
                        name: "John Doe",
                    },
                    circuit_state: "closed",
                    from_cache: false,
                },
            };
            serde_json::to_writer(&mut output, &reply)?;
            output.write_all(b"\n")?;
        }
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
    output.flush()
}
