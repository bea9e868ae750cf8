//! Requests to `/mcp` that the HTTP layers refuse (no or a wrong token, a foreign Host or
//! Origin, a body over the limit or not received) never reach the guard's `before`, yet the
//! owner must see them in the audit log (`specs/audit.md`, "HTTP refusals").
//!
//! The refusing layers mark their response with an [`HttpRefusal`]; [`record`], the
//! outermost layer of the gateway's listener, hands each marked response on `/mcp` to the
//! guard ([`CallGuard::http_refused`]) with what can be said safely: the client when the
//! token named one, the tool when `Mcp-Name` is a well-formed tool name, the request id.
//! Never the token, never a body.
//!
//! Anyone can send refused requests, and the log is in the vault, which syncs through git:
//! [`RefusalThrottle`] writes at most `[limits] refusal_audit_burst` records at once (20 by
//! default) and `refusal_audit_per_second` a second (2) per client (all requests without a
//! known token count as one client, `-`), and counts the rest. The next record written for
//! that client says how many were not recorded and since when; when no further refusal
//! comes, the last one held is written as soon as the rate allows, carrying the count. So
//! nothing is hidden, and the log grows by a bounded amount.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use aie_shared::{
    audit::ToolCall,
    config::Limits,
    http::{HttpRefusal, printable},
    policy::{EffectClass, Zone},
    tools::valid_tool_name,
};
use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::Response,
};
use chrono::{DateTime, SecondsFormat, Utc};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use serde_json::Value;

use super::{
    auth::{BearerAuth, bearer_token},
    guard::{CallGuard, HttpRefused},
};

/// The path whose refusals are recorded: the one a tool call comes through.
const MCP_PATH: &str = "/mcp";

/// `client` and `tool` of a record when the request named no known client or no usable tool.
pub const UNKNOWN: &str = "-";

/// Longest `x-request-id` kept as the record's correlation id.
const MAX_REQUEST_ID: usize = 128;

/// What [`record`] needs: the tokens, to name a known client, and the guard to tell.
#[derive(Clone)]
pub struct Recorder {
    auth: BearerAuth,
    guard: Arc<dyn CallGuard>,
}

impl Recorder {
    /// Names clients with `auth`'s tokens; hands refusals to `guard`.
    pub fn new(auth: BearerAuth, guard: Arc<dyn CallGuard>) -> Self {
        Self { auth, guard }
    }
}

/// The axum middleware: hands every refused `/mcp` request to the guard, once the refusal
/// is known, and answers the client exactly as the refusing layer did.
pub async fn record(State(recorder): State<Recorder>, request: Request, next: Next) -> Response {
    if request.uri().path() != MCP_PATH {
        return next.run(request).await;
    }
    let started = Instant::now();
    // Kept only to name the client of a refusal that happens before the bearer layer (a
    // foreign Origin): it is hashed to find the client, never written anywhere.
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let tool = requested_tool(request.headers());
    let response = next.run(request).await;
    let Some(refusal) = response.extensions().get::<HttpRefusal>().cloned() else {
        return response;
    };
    let client = if refusal.status == StatusCode::UNAUTHORIZED {
        None
    } else {
        authorization
            .as_ref()
            .and_then(bearer_token)
            .and_then(|token| recorder.auth.identify(token))
            .map(|identity| identity.name.clone())
    };
    // Set by the shared layers (or sent by the client): the id the request's trace carries.
    let request_id = response.headers().get("x-request-id").map_or_else(
        || UNKNOWN.to_owned(),
        |id| printable(id.as_bytes(), MAX_REQUEST_ID),
    );
    let refused = HttpRefused {
        client,
        tool,
        refusal,
        request_id,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    recorder.guard.http_refused(&refused).await;
    response
}

/// The tool a refused request named: its `Mcp-Name` header, when the request is (or may
/// be) a `tools/call` and the name is a well-formed tool name (`^[a-zA-Z0-9_-]{1,64}$`);
/// anything else a client sends there is not repeated into the log.
pub fn requested_tool(headers: &HeaderMap) -> Option<String> {
    if let Some(method) = headers.get("mcp-method")
        && method.as_bytes() != b"tools/call"
    {
        return None;
    }
    let name = headers.get("mcp-name")?.to_str().ok()?;
    valid_tool_name(name).then(|| name.to_owned())
}

impl HttpRefused {
    /// The audit record of this refusal in `zone`, `class` being the policy's class of the
    /// named tool ([`EffectClass::Execute`] when none is named): refused, `reason` the
    /// status and why, no arguments (`args_sha256` of `null`).
    pub fn audit_call(&self, zone: Zone, class: EffectClass) -> ToolCall {
        ToolCall::new(
            zone,
            self.client.as_deref().unwrap_or(UNKNOWN),
            &self.request_id,
            self.tool.as_deref().unwrap_or(UNKNOWN),
            class,
            &Value::Null,
        )
        .refused(self.refusal.to_string())
        .latency_ms(self.latency_ms)
    }
}

/// What to do with one refusal's record.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Write this record now (its reason counts any refusals held before it).
    Record(ToolCall),
    /// Over the rate: counted and held. `first` when nothing was held before for this
    /// client, so the caller schedules [`RefusalThrottle::release`].
    Held {
        /// The first one held since the last record.
        first: bool,
    },
}

/// What [`RefusalThrottle::release`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// Nothing held (a later record already carried the count).
    Nothing,
    /// The rate allows no record yet: try again after this long.
    Wait(Duration),
    /// Write the last refusal held, its reason counting the others.
    Record(ToolCall),
}

/// The refusals held for one client since its last record.
#[derive(Debug)]
struct Held {
    /// How many (the last one included).
    count: u64,
    /// When the first of them came.
    since: DateTime<Utc>,
    /// The last of them, as it would have been recorded.
    last: ToolCall,
}

/// How many refusal records a client gets: `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalRate {
    /// Records written at once, before the rate applies.
    pub burst: NonZeroU32,
    /// Records written a second once the burst is spent.
    pub per_second: NonZeroU32,
}

impl RefusalRate {
    /// The rate `[limits]` sets (`refusal_audit_burst`, `refusal_audit_per_second`).
    pub fn of(limits: &Limits) -> Self {
        Self {
            burst: limits.refusal_audit_burst,
            per_second: limits.refusal_audit_per_second,
        }
    }

    /// The token bucket of this rate.
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

impl Default for RefusalRate {
    /// The rate of an empty `[limits]`: 20 at once, then 2 a second.
    fn default() -> Self {
        Self::of(&Limits::default())
    }
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One client's bucket and what it holds.
struct Slot<C: Clock> {
    limiter: Limiter<C>,
    held: Option<Held>,
}

/// The rate in force and every client's slot, changed together under one lock.
struct Slots<C: Clock> {
    /// The rate new buckets get.
    rate: RefusalRate,
    /// Each client's bucket and what it holds, by client name.
    by_client: HashMap<String, Slot<C>>,
}

/// The rate of refusal records: a token bucket per client (the [`RefusalRate`] of the
/// config's `[limits]`), and a count of the refusals over it. The clients are the configured
/// ones and [`UNKNOWN`], so the map stays as small as the configuration.
pub struct RefusalThrottle<C: Clock = DefaultClock> {
    clock: C,
    slots: Mutex<Slots<C>>,
}

impl<C: Clock> std::fmt::Debug for RefusalThrottle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalThrottle")
            .field("rate", &self.rate())
            .finish_non_exhaustive()
    }
}

impl RefusalThrottle {
    /// A throttle at `rate`, on the system clock.
    pub fn new(rate: RefusalRate) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock> RefusalThrottle<C> {
    /// The slots; a panic elsewhere while they were held leaves them usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<C>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rate in force.
    pub fn rate(&self) -> RefusalRate {
        self.lock().rate
    }
}

impl<C: Clock + Clone> RefusalThrottle<C> {
    /// A throttle at `rate`, on `clock`.
    pub fn with_clock(rate: RefusalRate, clock: C) -> Self {
        Self {
            clock,
            slots: Mutex::new(Slots {
                rate,
                by_client: HashMap::new(),
            }),
        }
    }

    /// Applies `rate` from now on (a config reload). The same rate changes nothing: a reload
    /// never refills a bucket. Another rate gives every client a full bucket at that rate, as
    /// a changed `[limits]` rate limit does; what is held keeps its count, and its release
    /// (already scheduled) writes it as soon as the new bucket allows.
    pub fn set_rate(&self, rate: RefusalRate) {
        let mut slots = self.lock();
        if slots.rate == rate {
            return;
        }
        slots.rate = rate;
        let quota = rate.quota();
        for slot in slots.by_client.values_mut() {
            slot.limiter = RateLimiter::direct_with_clock(quota, self.clock.clone());
        }
    }

    /// Decides about `call`, a refusal of `client` (a configured name or [`UNKNOWN`]) that
    /// came at `now`.
    pub fn admit(&self, client: &str, call: ToolCall, now: DateTime<Utc>) -> Admission {
        let mut slots = self.lock();
        let quota = slots.rate.quota();
        let slot = slots
            .by_client
            .entry(client.to_owned())
            .or_insert_with(|| Slot {
                limiter: RateLimiter::direct_with_clock(quota, self.clock.clone()),
                held: None,
            });
        if slot.limiter.check().is_ok() {
            return Admission::Record(match slot.held.take() {
                Some(held) => counting(call, held.count, held.since),
                None => call,
            });
        }
        match &mut slot.held {
            Some(held) => {
                held.count += 1;
                held.last = call;
                Admission::Held { first: false }
            }
            None => {
                slot.held = Some(Held {
                    count: 1,
                    since: now,
                    last: call,
                });
                Admission::Held { first: true }
            }
        }
    }

    /// The record of what is held for `client`, once the rate allows one.
    pub fn release(&self, client: &str) -> Release {
        let mut slots = self.lock();
        let Some(slot) = slots.by_client.get_mut(client) else {
            return Release::Nothing;
        };
        if slot.held.is_none() {
            return Release::Nothing;
        }
        match slot.limiter.check() {
            Ok(()) => match slot.held.take() {
                Some(held) => Release::Record(counting(held.last, held.count - 1, held.since)),
                None => Release::Nothing,
            },
            Err(not_until) => Release::Wait(not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// `call`, its reason also saying that `count` refusals since `since` were not recorded.
fn counting(call: ToolCall, count: u64, since: DateTime<Utc>) -> ToolCall {
    if count == 0 {
        return call;
    }
    let reason = format!(
        "{} (and {count} similar refusals not recorded since {})",
        call.reason,
        since.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    call.reason(reason)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use aie_shared::audit::{CallDecision, CallStatus, args_sha256};
    use async_trait::async_trait;
    use axum::{body::Body, http::HeaderValue};
    use governor::clock::FakeRelativeClock;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;
    use crate::gateway::{
        CallInfo, CallOutcome, ClientIdentity, ClientToken, Gateway, Permit, gateway_router,
    };

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    /// `Mcp-Name` becomes the tool only when it is a well-formed tool name of a tools/call.
    #[test]
    fn only_well_formed_tool_names_are_kept() {
        fn tool(pairs: &[(&'static str, &[u8])]) -> Option<String> {
            requested_tool(&headers(pairs))
        }
        assert_eq!(
            tool(&[("mcp-method", b"tools/call"), ("mcp-name", b"email_send")]),
            Some("email_send".into())
        );
        assert_eq!(
            tool(&[("mcp-name", b"email_send")]),
            Some("email_send".into())
        );
        assert_eq!(tool(&[]), None);
        assert_eq!(
            tool(&[
                ("mcp-method", b"resources/read"),
                ("mcp-name", b"file:///x")
            ]),
            None
        );
        assert_eq!(tool(&[("mcp-name", b"../etc/passwd")]), None);
        assert_eq!(tool(&[("mcp-name", b"a b")]), None);
        assert_eq!(tool(&[("mcp-name", "é".as_bytes())]), None);
        assert_eq!(tool(&[("mcp-name", "x".repeat(65).as_bytes())]), None);
    }

    fn refused(client: Option<&str>, tool: Option<&str>) -> HttpRefused {
        HttpRefused {
            client: client.map(str::to_owned),
            tool: tool.map(str::to_owned),
            refusal: HttpRefusal::new(
                StatusCode::FORBIDDEN,
                "Origin https://evil.example not allowed",
            ),
            request_id: "req-1".into(),
            latency_ms: 3,
        }
    }

    /// A refusal's record: markers for what is unknown, status and why as the reason, no
    /// arguments.
    #[test]
    fn refusals_map_to_refused_records() {
        let call = refused(None, None).audit_call(Zone::Local, EffectClass::Execute);
        assert_eq!(call.client, "-");
        assert_eq!(call.tool, "-");
        assert_eq!(call.class, EffectClass::Execute);
        assert_eq!(call.correlation_id, "req-1");
        assert_eq!(call.reason, "403: Origin https://evil.example not allowed");
        assert_eq!(call.status, CallStatus::Refused);
        assert_eq!(call.decision, CallDecision::Refused);
        assert_eq!(call.args_sha256, args_sha256(&Value::Null));
        assert_eq!(call.latency_ms, 3);
        let call = refused(Some("laptop"), Some("vault_status"))
            .audit_call(Zone::Cloud, EffectClass::Read);
        assert_eq!(
            (call.client.as_str(), call.tool.as_str()),
            ("laptop", "vault_status")
        );
    }

    fn call(n: u32) -> ToolCall {
        refused(None, None)
            .audit_call(Zone::Local, EffectClass::Execute)
            .reason(format!("401: invalid token #{n}"))
    }

    /// When the refusals of these tests came.
    fn at_ten_past_nine() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-31T09:10:00.123Z")
            .unwrap()
            .to_utc()
    }

    /// `burst` at once, then `per_second`.
    fn rate(burst: u32, per_second: u32) -> RefusalRate {
        RefusalRate {
            burst: NonZeroU32::new(burst).unwrap(),
            per_second: NonZeroU32::new(per_second).unwrap(),
        }
    }

    /// Admits `n` refusals of `client` at once; how many are to be recorded.
    fn flood<C: Clock + Clone>(throttle: &RefusalThrottle<C>, client: &str, n: u32) -> u32 {
        let recorded = (0..n).filter(|&i| {
            matches!(
                throttle.admit(client, call(i), at_ten_past_nine()),
                Admission::Record(_)
            )
        });
        u32::try_from(recorded.count()).unwrap()
    }

    /// A burst is recorded, the rest counted; the next record says how many and since when,
    /// and a held one is released with the count once the rate allows. The default rate is
    /// 20 at once, then 2 a second.
    #[test]
    fn floods_are_counted_not_recorded() {
        assert_eq!(RefusalRate::default(), rate(20, 2));
        let clock = FakeRelativeClock::default();
        let throttle = RefusalThrottle::with_clock(RefusalRate::default(), clock.clone());
        let now = at_ten_past_nine();
        for n in 0..20 {
            assert!(matches!(
                throttle.admit(UNKNOWN, call(n), now),
                Admission::Record(_)
            ));
        }
        assert_eq!(
            throttle.admit(UNKNOWN, call(100), now),
            Admission::Held { first: true }
        );
        for n in 101..250 {
            assert_eq!(
                throttle.admit(UNKNOWN, call(n), now),
                Admission::Held { first: false }
            );
        }
        // Another client has its own bucket.
        assert!(matches!(
            throttle.admit("laptop", call(0), now),
            Admission::Record(_)
        ));
        let Release::Wait(wait) = throttle.release(UNKNOWN) else {
            panic!("released before the rate allows")
        };
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        clock.advance(wait);
        let Release::Record(released) = throttle.release(UNKNOWN) else {
            panic!("not released")
        };
        assert_eq!(
            released.reason,
            "401: invalid token #249 (and 149 similar refusals not recorded since 2025-01-31T09:10:00.123Z)"
        );
        assert_eq!(throttle.release(UNKNOWN), Release::Nothing);
        // Held again; a later admitted record carries the count itself.
        assert_eq!(
            throttle.admit(UNKNOWN, call(300), now),
            Admission::Held { first: true }
        );
        clock.advance(Duration::from_secs(1));
        let Admission::Record(next) = throttle.admit(UNKNOWN, call(301), now) else {
            panic!("not recorded after the rate allows")
        };
        assert!(
            next.reason
                .starts_with("401: invalid token #301 (and 1 similar refusals not recorded"),
            "{}",
            next.reason
        );
        assert_eq!(throttle.release(UNKNOWN), Release::Nothing);
    }

    /// The configured rate is the one applied: its burst is recorded at once, and a held
    /// refusal waits no longer than one `per_second` interval.
    #[test]
    fn the_configured_rate_applies() {
        let clock = FakeRelativeClock::default();
        let throttle = RefusalThrottle::with_clock(rate(3, 4), clock.clone());
        assert_eq!(flood(&throttle, UNKNOWN, 50), 3);
        let Release::Wait(wait) = throttle.release(UNKNOWN) else {
            panic!("released before the rate allows")
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(250),
            "{wait:?}"
        );
        clock.advance(wait);
        let Release::Record(released) = throttle.release(UNKNOWN) else {
            panic!("not released")
        };
        assert!(
            released.reason.contains("(and 46 similar refusals"),
            "{}",
            released.reason
        );
        let throttle = RefusalThrottle::with_clock(rate(1, 1), clock.clone());
        assert_eq!(flood(&throttle, "laptop", 50), 1);
    }

    /// A reload with the same rate refills no bucket; a new rate gives every client a full
    /// bucket at that rate, and what was held keeps its count.
    #[test]
    fn a_reloaded_rate_starts_new_buckets_and_keeps_the_count() {
        let clock = FakeRelativeClock::default();
        let throttle = RefusalThrottle::with_clock(rate(2, 1), clock.clone());
        assert_eq!(flood(&throttle, UNKNOWN, 10), 2);
        throttle.set_rate(rate(2, 1));
        assert_eq!(flood(&throttle, UNKNOWN, 5), 0);
        throttle.set_rate(rate(5, 1));
        assert_eq!(throttle.rate(), rate(5, 1));
        // The first admitted record carries the 13 held so far (8 + 5), then the new burst.
        let Admission::Record(first) = throttle.admit(UNKNOWN, call(99), at_ten_past_nine()) else {
            panic!("the new burst is not available")
        };
        assert!(
            first.reason.contains("(and 13 similar refusals"),
            "{}",
            first.reason
        );
        assert_eq!(flood(&throttle, UNKNOWN, 10), 4);
        // A client first seen after the reload gets the new rate too.
        assert_eq!(flood(&throttle, "laptop", 10), 5);
    }

    /// Collects what the recorder hands over.
    #[derive(Default)]
    struct Collect(Mutex<Vec<HttpRefused>>);

    #[async_trait]
    impl CallGuard for Collect {
        fn visible(&self, _: &ClientIdentity, _: &str) -> bool {
            true
        }
        async fn before(&self, client: &ClientIdentity, call: &CallInfo) -> Result<Permit, String> {
            Ok(Permit::new(client.clone(), call.clone()))
        }
        async fn after(&self, _: Permit, _: &CallOutcome) {}
        async fn http_refused(&self, refused: &HttpRefused) {
            self.0.lock().unwrap().push(refused.clone());
        }
    }

    /// Every refusal on `/mcp`, from whichever layer, reaches the guard once, with the known
    /// client's name and never its token; the client's answer is the refusing layer's.
    #[tokio::test]
    async fn refusals_on_mcp_reach_the_guard() {
        let guard = Arc::new(Collect::default());
        let gateway = Gateway::builder()
            .client(
                ClientToken::from_token(ClientIdentity::new("laptop", "owner"), "s3cret").unwrap(),
            )
            .shared_guard(guard.clone())
            .build()
            .await
            .unwrap();
        let mut opts = aie_shared::HttpOptions::new("127.0.0.1:8700".parse().unwrap());
        opts.max_body_bytes = 1024;
        let app = gateway_router(
            &gateway,
            &opts,
            aie_shared::Metrics::new(),
            CancellationToken::new(),
        );
        let send = |token: Option<&str>, origin: Option<&str>, path: &str, body: Vec<u8>| {
            let mut request = Request::post(format!("http://127.0.0.1:8700{path}"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "email_send")
                .header("x-request-id", "req-7");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            app.clone().oneshot(request.body(Body::from(body)).unwrap())
        };
        let status = |r: Result<Response, std::convert::Infallible>| r.unwrap().status();
        assert_eq!(status(send(None, None, "/mcp", vec![]).await), 401);
        assert_eq!(status(send(Some("guess"), None, "/mcp", vec![]).await), 401);
        let evil = Some("https://evil.example");
        assert_eq!(
            status(send(Some("s3cret"), evil, "/mcp", vec![]).await),
            403
        );
        assert_eq!(status(send(Some("guess"), evil, "/mcp", vec![]).await), 403);
        assert_eq!(
            status(send(Some("s3cret"), None, "/mcp", vec![b' '; 4096]).await),
            413
        );
        // Not refusals of /mcp (another path; a parse error): not handed over.
        assert_eq!(status(send(None, evil, "/healthz", vec![]).await), 403);
        assert_eq!(
            status(send(Some("s3cret"), None, "/mcp", b"{".to_vec()).await),
            400
        );

        let seen = guard.0.lock().unwrap().clone();
        let summary: Vec<(Option<&str>, String)> = seen
            .iter()
            .map(|r| (r.client.as_deref(), r.refusal.to_string()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (None, "401: no bearer token".to_owned()),
                (None, "401: invalid token".to_owned()),
                (
                    Some("laptop"),
                    "403: Origin https://evil.example not allowed".to_owned()
                ),
                (
                    None,
                    "403: Origin https://evil.example not allowed".to_owned()
                ),
                (Some("laptop"), "413: body over 1024 bytes".to_owned()),
            ]
        );
        assert!(seen.iter().all(|r| r.tool.as_deref() == Some("email_send")));
        assert!(seen.iter().all(|r| r.request_id == "req-7"));
        assert!(!format!("{seen:?}").contains("s3cret"));
    }
}
