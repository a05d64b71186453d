//! The Maelstrom node: the message protocol in front of the core.
//!
//! The node takes framed messages and the current instant. A handler either
//! answers at once or asks the core for something and is *parked* until the
//! core's outcome for it arrives; then its reply is written. Calls to the
//! demo services come out as [`Effect`]s for a runtime to perform, and their
//! results go back in through [`Node::complete`]. [`Node::poll_timeout`] and
//! [`Node::handle_timeout`] do the work that time triggers (a breaker
//! leaving `open`, a call's deadline, a queued order's next delivery).
//!
//! The node reads no clock and touches no file or socket, so every
//! behaviour, timeouts and backoffs included, is tested by passing instants
//! and completions. [`InProcessNode`] pairs it with the demo services
//! answering every call within the same step: that is what the binary runs,
//! and it answers a stream of requests in order.

use super::handlers::{self, Ctx, Waiting};
use crate::core::load_mode::{FeatureId, ModePolicy};
use crate::core::queue::journal::JournalInfo;
use crate::core::queue::{QueueConfig, RecoveredQueue, StoredWrite};
use crate::core::{Call, CallId, CallResult, Core, CoreConfig, ServiceId, ServiceSpec, Services};
use crate::demo::DemoData;
use crate::demo::in_process::{DemoCall, DemoServices, order_id_of};
use crate::planted_bug::{PlantedBug, is_planted};
use crate::protocol::reply::{self, ReplyTo, UNNAMED_NODE_ID};
use crate::protocol::{self, Rejected, Request};
use bytes::Bytes;
use slab::Slab;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A parked request's token with the core.
pub type Waiter = usize;

/// The demo's three services, by their ids in the core.
#[derive(Debug, Clone, Copy)]
pub struct DemoServiceIds {
    pub user: ServiceId,
    pub product: ServiceId,
    pub order: ServiceId,
}

/// The demo's three features, by their ids in the shedder.
#[derive(Debug, Clone, Copy)]
pub struct DemoFeatureIds {
    pub recommendations: FeatureId,
    pub search: FeatureId,
    pub reviews: FeatureId,
}

/// Something for the runtime to do.
#[derive(Debug)]
pub enum Effect {
    /// Make this call and report its result with [`Node::complete`].
    Call(Call<DemoCall>),
    /// `set_service_health`: the demo service goes down, or comes back.
    SetServiceHealth { service: ServiceId, available: bool },
}

/// Everything that shapes a node; the runtime fills it from flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The policies of `user`, `product` and `order` (names are set here).
    pub service: ServiceSpec,
    pub cache_capacity: usize,
    pub queue: QueueConfig,
    /// Seeds the retry jitter, so a run can be replayed.
    pub seed: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            service: ServiceSpec::named("demo"),
            cache_capacity: crate::core::cache::DEFAULT_CAPACITY,
            queue: QueueConfig::default(),
            seed: 0,
        }
    }
}

/// The node's own state that handlers may touch.
pub struct NodeState {
    /// Set by `init`; until then replies come from the request's `dest`.
    pub node_id: Option<String>,
    pub services: DemoServiceIds,
    pub features: DemoFeatureIds,
    /// Effects of handlers (not calls: those come from the core).
    pub effects: VecDeque<Effect>,
    /// Orders without a key of their own so far this run (their keys are
    /// made unique with it).
    pub anonymous_orders: u64,
}

/// Where a reply goes.
pub enum Addressing<'a> {
    /// Answering while the request is handled: its own strings. The reply
    /// comes from the node's id as it is when the reply is written (so
    /// `init_ok` comes from the id `init` gave), else the request's `dest`.
    Now {
        dest: Option<&'a str>,
        client: &'a str,
        in_reply_to: Option<u64>,
        drop: bool,
    },
    /// Answering a parked request: the envelope head written when it was
    /// parked.
    Parked {
        head: &'a [u8],
        in_reply_to: Option<u64>,
        drop: bool,
    },
}

impl Addressing<'_> {
    /// Writes the envelope head; `node_id` is the node's `init` id, if any.
    pub(super) fn write_head(&self, out: &mut Vec<u8>, node_id: Option<&str>) {
        match self {
            Addressing::Now { dest, client, .. } => {
                let source = node_id.or(*dest).unwrap_or(UNNAMED_NODE_ID);
                reply::write_envelope_head(out, source, client)
            }
            Addressing::Parked { head, .. } => out.extend_from_slice(head),
        }
    }

    pub(super) fn in_reply_to(&self) -> Option<u64> {
        match self {
            Addressing::Now { in_reply_to, .. } | Addressing::Parked { in_reply_to, .. } => {
                *in_reply_to
            }
        }
    }

    pub(super) fn drops_reply(&self) -> bool {
        match self {
            Addressing::Now { drop, .. } | Addressing::Parked { drop, .. } => *drop,
        }
    }
}

/// The reply's `src`: this node's `init` id, else the request's `dest`.
fn reply_source<'a>(state: &'a NodeState, dest: Option<&'a str>) -> &'a str {
    state.node_id.as_deref().or(dest).unwrap_or(UNNAMED_NODE_ID)
}

/// A request waiting for the core.
struct Parked {
    /// `{"src":..,"dest":..,"body":`, written when it was parked.
    head: Vec<u8>,
    in_reply_to: Option<u64>,
    drop_reply: bool,
    waiting: Waiting,
}

/// The node.
pub struct Node {
    core: Core<Waiter, DemoCall>,
    state: NodeState,
    parked: Slab<Parked>,
    /// Envelope-head buffers of requests already answered, for reuse.
    head_pool: Vec<Vec<u8>>,
    /// Reply lines not yet taken by the runtime.
    outbox: Vec<u8>,
    /// Lines that could not be answered at all.
    unaddressable: u64,
    /// The instant due work was last looked for.
    due_checked_at: Option<Instant>,
}

/// The demo's service names, in the order `get_status` lists them.
pub const DEMO_SERVICES: [&str; 3] = ["user", "product", "order"];

impl Node {
    /// A node in front of the demo services, its cache warmed as if every
    /// record of `data`'s warm set had been fetched at `now`.
    pub fn new(config: NodeConfig, data: &DemoData, now: Instant) -> Self {
        let mut services = Services::default();
        let [user, product, order] = DEMO_SERVICES.map(|name| {
            services.add(ServiceSpec {
                name: name.to_string(),
                ..config.service.clone()
            })
        });
        let mut core = Core::new(CoreConfig {
            services,
            cache_capacity: config.cache_capacity,
            modes: ModePolicy::default(),
            queue: config.queue,
            seed: config.seed,
            result_id: |response| order_id_of(&response.body),
            kept_copy: Arc::clone,
        });
        let ok = |body: Bytes| {
            Arc::new(crate::core::Response::new(
                200,
                body,
                crate::core::Storage::Keep { max_stale: None },
            ))
        };
        for (id, record) in data.warm_users() {
            core.warm_cache(user, id.as_bytes(), ok(record), now);
        }
        for (id, record) in data.warm_products() {
            core.warm_cache(product, id.as_bytes(), ok(record), now);
        }
        let shedder = core.shedder();
        let feature = |name: &str| shedder.feature(name).expect("a default feature");
        let features = DemoFeatureIds {
            recommendations: feature("recommendations"),
            search: feature("search"),
            reviews: feature("reviews"),
        };
        Node {
            core,
            state: NodeState {
                node_id: None,
                services: DemoServiceIds {
                    user,
                    product,
                    order,
                },
                features,
                effects: VecDeque::new(),
                anonymous_orders: 0,
            },
            parked: Slab::new(),
            head_pool: Vec::new(),
            outbox: Vec::new(),
            unaddressable: 0,
            due_checked_at: None,
        }
    }

    /// Resumes the queue from its journal; pending orders are due at `now`.
    pub fn recover(&mut self, journal: JournalInfo, recovered: RecoveredQueue, now: Instant) {
        self.core.recover_queue(journal, recovered, now);
    }

    /// Journal rows to commit before the replies now in the outbox go out.
    pub fn take_journal_writes(&mut self) -> Vec<StoredWrite> {
        self.core.take_journal_writes()
    }

    /// Handles one framed message that started on input line `line`.
    pub fn handle_message(&mut self, message: &[u8], line: u64, now: Instant) {
        match protocol::parse_request(message) {
            Ok(request) => self.dispatch(&request, now),
            Err(Rejected::Malformed {
                src,
                dest,
                msg_id,
                error,
            }) => {
                let to = ReplyTo {
                    node_id: reply_source(&self.state, dest.as_deref()),
                    client: &src,
                    in_reply_to: msg_id,
                };
                reply::write_error(&mut self.outbox, to, &error);
            }
            Err(Rejected::Unaddressable(reason)) => {
                self.unaddressable += 1;
                tracing::warn!(line, "skipping input: {reason}");
            }
        }
    }

    /// Handles `message` if it is exactly one well-formed message, and says
    /// whether it was; anything else is left untouched for
    /// [`Self::handle_message`].
    pub fn handle_well_formed(&mut self, message: &[u8], now: Instant) -> bool {
        match protocol::parse_well_formed(message) {
            Some(request) => {
                self.dispatch(&request, now);
                true
            }
            None => false,
        }
    }

    fn dispatch(&mut self, request: &Request<'_>, now: Instant) {
        self.handle_due(now);
        let drop_reply =
            is_planted(PlantedBug::DropReply) && request.msg_id.is_some_and(|id| id % 7 == 3);
        let waiter = self.parked.vacant_key();
        let addressing = Addressing::Now {
            dest: request.dest.as_deref(),
            client: &request.src,
            in_reply_to: request.msg_id,
            drop: drop_reply,
        };
        let mut ctx = Ctx::new(
            &mut self.core,
            &mut self.state,
            waiter,
            now,
            addressing,
            &mut self.outbox,
        );
        if let Some(waiting) = handlers::start(request, &mut ctx) {
            let mut head = self.head_pool.pop().unwrap_or_default();
            let source = reply_source(&self.state, request.dest.as_deref());
            reply::write_envelope_head(&mut head, source, &request.src);
            let key = self.parked.insert(Parked {
                head,
                in_reply_to: request.msg_id,
                drop_reply,
                waiting,
            });
            debug_assert_eq!(key, waiter);
        }
        self.settle(now);
        // A request may have let the queue's head become deliverable (a
        // breaker closed, a service came back).
        if self.core.queue().has_pending() {
            self.core.handle_timeout(now);
            self.settle(now);
        }
    }

    /// Does the time-driven work due at `now`, if any is. Messages that
    /// arrived together share one `now`, and nothing the node schedules is
    /// due at the instant it was scheduled, so it is looked at once per
    /// instant.
    fn handle_due(&mut self, now: Instant) {
        if self.due_checked_at == Some(now) {
            return;
        }
        self.due_checked_at = Some(now);
        if self.core.poll_timeout().is_some_and(|due| due <= now) {
            self.core.handle_timeout(now);
            self.settle(now);
        }
    }

    /// Resumes every parked request the core has an outcome for.
    fn settle(&mut self, now: Instant) {
        while let Some((waiter, outcome)) = self.core.poll_outcome() {
            let Some(parked) = self.parked.try_remove(waiter) else {
                debug_assert!(false, "an outcome for a request that is not parked");
                continue;
            };
            let Parked {
                head,
                in_reply_to,
                drop_reply,
                waiting,
            } = parked;
            let addressing = Addressing::Parked {
                head: &head,
                in_reply_to,
                drop: drop_reply,
            };
            let waiter = self.parked.vacant_key();
            let mut ctx = Ctx::new(
                &mut self.core,
                &mut self.state,
                waiter,
                now,
                addressing,
                &mut self.outbox,
            );
            match handlers::resume(waiting, outcome, &mut ctx) {
                Some(waiting) => {
                    let key = self.parked.insert(Parked {
                        head,
                        in_reply_to,
                        drop_reply,
                        waiting,
                    });
                    debug_assert_eq!(key, waiter);
                }
                None => {
                    let mut head = head;
                    head.clear();
                    self.head_pool.push(head);
                }
            }
        }
    }

    /// The next thing for the runtime to do: a handler's effect, or a call.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.state
            .effects
            .pop_front()
            .or_else(|| self.core.poll_call().map(Effect::Call))
    }

    /// A call made for an [`Effect::Call`] ended with `result` at `now`.
    pub fn complete(&mut self, id: CallId, result: CallResult, now: Instant) {
        self.core.complete(id, result, now);
        self.settle(now);
    }

    /// The next instant at which [`Self::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Does the work due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.settle(now);
    }

    /// Reply lines written since the last call, each ending in `\n`.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbox)
    }

    /// Writes the pending reply lines to `out` in one go, leaving the
    /// outbox empty (and its allocation in place for the next burst).
    pub fn write_output(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let written = out.write_all(&self.outbox);
        self.outbox.clear();
        written
    }

    /// Bytes of replies waiting to be taken.
    pub fn output_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn core(&self) -> &Core<Waiter, DemoCall> {
        &self.core
    }

    pub fn core_mut(&mut self) -> &mut Core<Waiter, DemoCall> {
        &mut self.core
    }

    pub fn services(&self) -> DemoServiceIds {
        self.state.services
    }

    /// Requests waiting for the core.
    pub fn parked_requests(&self) -> usize {
        self.parked.len()
    }

    /// Input lines that were skipped because no reply could be addressed.
    pub fn unaddressable_lines(&self) -> u64 {
        self.unaddressable
    }
}

/// The node with the demo services answering every call in-process, within
/// the step that made it: what the binary runs, what the benches measure,
/// and the simplest way to drive the node in a test.
pub struct InProcessNode {
    pub node: Node,
    pub demo: DemoServices,
}

impl InProcessNode {
    pub fn new(config: NodeConfig, data: DemoData, now: Instant) -> Self {
        InProcessNode {
            node: Node::new(config, &data, now),
            demo: DemoServices::new(data),
        }
    }

    /// Handles one message and every call it leads to.
    pub fn handle_message(&mut self, message: &[u8], line: u64, now: Instant) {
        self.node.handle_message(message, line, now);
        self.perform_effects(now);
    }

    /// [`Node::handle_well_formed`], effects included.
    pub fn handle_well_formed(&mut self, message: &[u8], now: Instant) -> bool {
        let handled = self.node.handle_well_formed(message, now);
        if handled {
            self.perform_effects(now);
        }
        handled
    }

    /// Does the work due at `now`, calls included.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        self.perform_effects(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    /// Performs the node's effects until there are none left.
    fn perform_effects(&mut self, now: Instant) {
        while let Some(effect) = self.node.poll_effect() {
            match effect {
                Effect::Call(call) => {
                    let result = self.demo.answer(&call);
                    self.node.complete(call.id, result, now);
                }
                Effect::SetServiceHealth { service, available } => {
                    self.demo.set_available(service, available)
                }
            }
        }
    }
}
