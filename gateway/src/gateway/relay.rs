//! The client side of an upstream MCP session, relaying what the upstream server sends to
//! the downstream client it works for: its requests (sampling, elicitation, roots), its
//! notifications (progress, logs, list changes, resource updates).
//!
//! Notifications are relayed by [`Relaying`], the session's transport, in the order they
//! arrive; requests by [`Relay`], the session's client handler.
//!
//! The relay is generic over messages: it never looks inside a request or a notification
//! beyond the two things that name a downstream request. Progress tokens: rmcp gives every
//! upstream request a token of its own, so an upstream progress notification is rewritten
//! to the token the downstream client chose. Request association: a server request that
//! arrived on the stream of one of the gateway's upstream requests (SEP-2260) is delivered
//! downstream on the stream of the client request that caused it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aie_shared::rmcp::{
    ErrorData,
    model::{
        CancelledNotificationParam, ClientConfig, ClientResult, GetExtensions as _, JsonRpcMessage,
        JsonRpcNotification, ProgressToken, RequestId, ServerNotification, ServerRequest,
    },
    service::{
        InboundStreamOrigin, NotificationContext, OriginatingRequestId, Peer, PeerRequestOptions,
        RequestContext, RoleClient, RoleServer, RxJsonRpcMessage, Service, TxJsonRpcMessage,
    },
    transport::Transport,
};
use tokio::sync::Notify;

/// How long a relayed message waits for the gateway to record the upstream request it
/// belongs to: rmcp hands out the request's id and progress token only once the request is
/// queued, so an answer can in principle overtake the bookkeeping by a few microseconds.
const ASSOCIATION_WAIT: Duration = Duration::from_millis(250);

/// The downstream request an upstream request was made for.
#[derive(Clone)]
pub struct Origin {
    /// The downstream client's session or stateless request.
    pub peer: Peer<RoleServer>,
    /// The downstream request's id.
    pub request_id: RequestId,
    /// The progress token the downstream client chose, if any.
    pub progress_token: Option<ProgressToken>,
}

#[derive(Default)]
struct InFlight {
    /// Every upstream request in flight; `None` for the gateway's own (nobody to tell).
    by_id: HashMap<RequestId, Option<Origin>>,
    by_token: HashMap<ProgressToken, RequestId>,
}

struct Inner {
    backend: Arc<str>,
    info: ClientConfig,
    /// The downstream session every unassociated message goes to (a legacy session's
    /// client); `None` for the gateway's own sessions, whose unassociated messages have
    /// no one to go to.
    session: Option<Peer<RoleServer>>,
    in_flight: Mutex<InFlight>,
    recorded: Notify,
}

/// The client handler of one upstream session.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl Relay {
    /// A relay for `backend`, introducing itself upstream as `info`, delivering unassociated
    /// messages to `session` when there is one.
    pub fn new(backend: Arc<str>, info: ClientConfig, session: Option<Peer<RoleServer>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                info,
                session,
                in_flight: Mutex::new(InFlight::default()),
                recorded: Notify::new(),
            }),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that upstream request `id` (with `token`) was made for `origin` (`None`: for
    /// the gateway itself). Forgotten when the returned guard drops.
    pub fn record(&self, id: RequestId, token: ProgressToken, origin: Option<Origin>) -> Recorded {
        let mut in_flight = self.in_flight();
        in_flight.by_token.insert(token, id.clone());
        in_flight.by_id.insert(id.clone(), origin);
        drop(in_flight);
        self.inner.recorded.notify_waiters();
        Recorded {
            relay: self.clone(),
            id,
        }
    }

    /// Forgets upstream request `id` once it is answered (or abandoned).
    fn forget(&self, id: &RequestId) {
        let mut in_flight = self.in_flight();
        if in_flight.by_id.remove(id).is_some() {
            in_flight.by_token.retain(|_, request| request != id);
        }
    }

    /// The origin of upstream request `id`, waiting briefly for it to be recorded.
    async fn origin_of(&self, id: &RequestId) -> Option<Origin> {
        self.wait_for(|in_flight| in_flight.by_id.get(id).cloned())
            .await
            .flatten()
    }

    /// The origin of the upstream request that progress `token` belongs to.
    async fn origin_of_token(&self, token: &ProgressToken) -> Option<Origin> {
        self.wait_for(|in_flight| {
            let id = in_flight.by_token.get(token)?;
            in_flight.by_id.get(id).cloned()
        })
        .await
        .flatten()
    }

    /// What `find` finds, waiting up to [`ASSOCIATION_WAIT`] for it to be recorded.
    async fn wait_for<T>(&self, find: impl Fn(&InFlight) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + ASSOCIATION_WAIT;
        loop {
            let recorded = self.inner.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if let Some(origin) = find(&self.in_flight()) {
                return Some(origin);
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                return None;
            }
        }
    }

    /// The only request in flight, when there is exactly one: the best guess for a server
    /// request on a transport that cannot say which stream it came on (the in-process pipe).
    fn sole_origin(&self) -> Option<Origin> {
        let in_flight = self.in_flight();
        let mut origins = in_flight.by_id.values();
        match (origins.next(), origins.next()) {
            (Some(origin), None) => origin.clone(),
            _ => None,
        }
    }

    /// Where a server request goes, and on behalf of which downstream request.
    async fn route_request(&self, cx: &RequestContext<RoleClient>) -> Option<Origin> {
        match cx.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => self.origin_of(id).await,
            Some(InboundStreamOrigin::Unassociated) => None,
            None => self.sole_origin(),
        }
    }
}

/// Keeps an upstream request recorded while it is in flight.
pub struct Recorded {
    relay: Relay,
    id: RequestId,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.relay.forget(&self.id);
    }
}

impl Service<RoleClient> for Relay {
    async fn handle_request(
        &self,
        mut request: ServerRequest,
        cx: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        if matches!(request, ServerRequest::PingRequest(_)) {
            // Liveness of the gateway's own upstream session: the gateway answers it.
            return Ok(ClientResult::empty(()));
        }
        let origin = self.route_request(&cx).await;
        let peer = match (&origin, &self.inner.session) {
            (Some(origin), _) => origin.peer.clone(),
            (None, Some(session)) => session.clone(),
            (None, None) => {
                return Err(ErrorData::invalid_request(
                    format!(
                        "upstream `{}` sent a request ({}) the gateway cannot relay: no client request is waiting on it",
                        self.inner.backend,
                        request_method(&request)
                    ),
                    None,
                ));
            }
        };
        if let Some(origin) = &origin {
            // Delivered on the stream of the client request that caused it (SEP-2260).
            request
                .extensions_mut()
                .insert(OriginatingRequestId(origin.request_id.clone()));
        }
        let options = PeerRequestOptions::no_options().with_meta(cx.meta.clone());
        let handle = peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| ErrorData::internal_error(format!("the client is gone: {e}"), None))?;
        let id = handle.id.clone();
        let client = handle.peer.clone();
        tokio::select! {
            answer = handle.await_response() => match answer {
                Ok(result) => Ok(result),
                Err(aie_shared::rmcp::ServiceError::McpError(error)) => Err(error),
                Err(e) => Err(ErrorData::internal_error(format!("the client did not answer: {e}"), None)),
            },
            () = cx.ct.cancelled() => {
                // The upstream server withdrew its request: withdraw it from the client too.
                let param = CancelledNotificationParam::new(Some(id), Some("cancelled by the server".to_owned()));
                let _ = client.send_notification(
                    aie_shared::rmcp::model::CancelledNotification::new(param).into(),
                ).await;
                Err(ErrorData::internal_error("cancelled by the server", None))
            }
        }
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        _cx: NotificationContext<RoleClient>,
    ) -> Result<(), ErrorData> {
        // Every notification but cancellations was relayed by [`Relaying`] already, in order;
        // rmcp handles cancellations itself.
        let _ = notification;
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        self.inner.info.clone()
    }
}

impl Relay {
    /// Delivers `notification` to the client it belongs to: a progress notification to the
    /// request that asked for it (under the client's own token), anything else to the
    /// session.
    async fn deliver(&self, mut notification: ServerNotification) {
        let peer = match &mut notification {
            ServerNotification::ProgressNotification(progress) => {
                let Some(origin) = self.origin_of_token(&progress.params.progress_token).await
                else {
                    return;
                };
                let Some(token) = origin.progress_token else {
                    // The client asked for no progress.
                    return;
                };
                progress.params.progress_token = token;
                origin.peer
            }
            _ => match &self.inner.session {
                Some(session) => session.clone(),
                None => return,
            },
        };
        if let Err(e) = peer.send_notification(notification).await {
            tracing::debug!(backend = %self.inner.backend, error = %e, "notification not relayed");
        }
    }
}

/// The transport of an upstream session, relaying the upstream's notifications as they
/// arrive, before the next message is read. rmcp's own loop would hand each notification
/// to a task of its own, so a request's last progress notification could reach the client
/// after the request's result; delivering them here, in order, rules that out.
pub struct Relaying<T> {
    inner: T,
    relay: Relay,
}

impl<T> Relaying<T> {
    /// `inner`, its notifications delivered through `relay`.
    pub fn new(inner: T, relay: Relay) -> Self {
        Self { inner, relay }
    }
}

impl<T> Transport<RoleClient> for Relaying<T>
where
    T: Transport<RoleClient>,
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let message = self.inner.receive().await?;
            match message {
                JsonRpcMessage::Notification(JsonRpcNotification { notification, .. })
                    if !matches!(notification, ServerNotification::CancelledNotification(_)) =>
                {
                    self.relay.deliver(notification).await;
                }
                other => return Some(other),
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

fn request_method(request: &ServerRequest) -> &'static str {
    match request {
        ServerRequest::PingRequest(_) => "ping",
        ServerRequest::CreateMessageRequest(_) => "sampling/createMessage",
        ServerRequest::ListRootsRequest(_) => "roots/list",
        ServerRequest::ElicitRequest(_) => "elicitation/create",
        _ => "a custom request",
    }
}
